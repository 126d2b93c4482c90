# Galileo's "Creating And Using Stages" how-to (docs.galileo.ai, galileo-protect/how-to/
# creating-and-using-stages), its examples as written, with one change: the import.
# `<project_id>` is the page's placeholder, filled in as every user fills it in. The page's
# two create examples both name "my first stage"; a project holds one stage of a name (in
# Galileo too), so the second is called "my central stage" here.
import stageguard.client as gp  # was: import galileo_protect as gp

gp.create_stage(name="my first stage", project_id="<project_id>", description="This is my first stage", type="local")  # type can be "central" or "local", default is "local"

gp.create_stage(name="my central stage", project_id="<project_id>", description="This is my first stage", type="central", prioritized_rulesets=[
    {
        "rules": [
            {
                "metric": "pii",
                "operator": "contains",
                "target_value": "ssn",
            },
        ],
        "action": {
            "type": "OVERRIDE",
            "choices": [
                "Personal Identifiable Information detected in the model output. Sorry, I cannot answer that question."
            ],
        },
    },
])

# Using the stages, in galileo_protect's own calls.
response = gp.invoke(payload={"output": "Sure, your SSN is 123-45-6789."},
                     project_id="<project_id>", stage_name="my central stage")
print("central", response.status, response.text)
response = gp.invoke(payload={"output": "Hello!"}, project_id="<project_id>",
                     stage_name="my first stage", prioritized_rulesets=[{
                         "rules": [{"metric": "pii", "operator": "contains", "target_value": "ssn"}],
                         "action": {"type": "OVERRIDE", "choices": ["blocked"]}}])
print("local", response.status, response.text)
gp.pause_stage(project_id="<project_id>", stage_name="my central stage")
print("paused", gp.invoke(payload={"output": "x"}, project_id="<project_id>",
                          stage_name="my central stage").status)
gp.resume_stage(project_id="<project_id>", stage_name="my central stage")
stage = gp.update_stage(project_id="<project_id>", stage_name="my central stage",
                        prioritized_rulesets=[])
print("updated", stage.version)
