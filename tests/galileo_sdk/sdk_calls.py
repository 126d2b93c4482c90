"""Galileo's SDK, as its documentation uses it, run against `stageguard serve`.

Run by tests/test_galileo_sdk.py in its own process, configured only through the SDK's own
settings (GALILEO_CONSOLE_URL, GALILEO_API_URL, GALILEO_API_KEY, GALILEO_PROJECT). Prints one
JSON line of what came back."""

import asyncio
import json

from galileo import GalileoMetrics
from galileo.protect import ainvoke_protect, invoke_protect
from galileo.stages import (
    create_protect_stage,
    get_protect_stage,
    pause_protect_stage,
    resume_protect_stage,
    update_protect_stage,
)
from galileo_core.schemas.protect.action import OverrideAction
from galileo_core.schemas.protect.payload import Payload
from galileo_core.schemas.protect.rule import Rule, RuleOperator
from galileo_core.schemas.protect.ruleset import Ruleset
from galileo_core.schemas.protect.stage import StageType

# input_pii has a built-in scorer: the SDK's Payload carries text only, no metric values.
rule = Rule(metric=GalileoMetrics.input_pii, operator=RuleOperator.contains, target_value="ssn")
ruleset = Ruleset(rules=[rule], action=OverrideAction(choices=["Sorry, no."]))
out = {}

stage = create_protect_stage(name="My stage", stage_type=StageType.central,
                             prioritized_rulesets=[ruleset],
                             description="Test the input for PII.")
out["created"] = [str(stage.id), stage.name, stage.type.value, stage.version]
local = create_protect_stage(name="My local stage", stage_type=StageType.local)
out["local"] = local.type.value
found = get_protect_stage(stage_name="My stage")
out["found"] = str(found.id)

response = invoke_protect(payload=Payload(input="a perfectly kind question"),
                          stage_name="My stage", project_name="SDK project")
out["invoke"] = [response.status.value, response.text]
response = invoke_protect(payload=Payload(input="my ssn is 123-45-6789"),
                          stage_name="My stage", project_name="SDK project", timeout=5)
out["triggered"] = [response.status.value, response.text]
response = invoke_protect(payload=Payload(output="hello"), stage_id=stage.id,
                          prioritized_rulesets=[])
out["by_id"] = response.status.value
response = asyncio.run(ainvoke_protect(payload=Payload(input="ssn 123-45-6789"),
                                       prioritized_rulesets=[ruleset],
                                       stage_name="My local stage",
                                       project_name="SDK project"))
out["ainvoke_local"] = response.status.value

out["paused"] = pause_protect_stage(stage_name="My stage").paused
out["paused_invoke"] = invoke_protect(payload=Payload(input="x"), stage_id=stage.id
                                      ).status.value
out["resumed"] = resume_protect_stage(stage_name="My stage").paused
stricter = Ruleset(rules=[Rule(metric=GalileoMetrics.input_toxicity, operator=RuleOperator.gt,
                               target_value=0.9)])
out["updated"] = update_protect_stage(stage_name="My stage",
                                      prioritized_rulesets=[stricter]).version
print(json.dumps(out))
