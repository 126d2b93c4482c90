# Galileo's "Stages" SDK page (docs.galileo.ai, sdk-api/protect/stages), its examples in
# order, as written, with one change: `galileo.stages` became `stageguard.client`.
# GALILEO_PROJECT names the project, as the page says.
from galileo import GalileoMetrics
from stageguard.client import create_protect_stage

from galileo_core.schemas.protect.rule import Rule, RuleOperator
from galileo_core.schemas.protect.ruleset import Ruleset
from galileo_core.schemas.protect.stage import StageType

# Create a rule
rule = Rule(
    metric=GalileoMetrics.input_toxicity,
    operator=RuleOperator.gt,
    target_value=0.1
)

# Add this rule to a ruleset, using the default passthrough action
ruleset = Ruleset(rules=[rule])

# Create a stage
stage = create_protect_stage(
    name="My stage",
    stage_type=StageType.central,
    prioritized_rulesets=[ruleset],
    description="Test the input for toxicity."
)
print("created", stage.name, stage.type.value, stage.version)

from stageguard.client import create_protect_stage

from galileo_core.schemas.protect.stage import StageType

# Create a stage
stage = create_protect_stage(
    name="My local stage",
    stage_type=StageType.local,
    description="A local stage with rules set when it is used"
)
print("created", stage.name, stage.type.value)

from stageguard.client import get_protect_stage

stage = get_protect_stage(stage_name="My stage")
print("got", stage.name)

from galileo import GalileoMetrics
from stageguard.client import update_protect_stage

from galileo_core.schemas.protect.rule import Rule, RuleOperator
from galileo_core.schemas.protect.ruleset import Ruleset
from galileo_core.schemas.protect.stage import StageType

# Create a rule
rule = Rule(
    metric=GalileoMetrics.input_toxicity,
    operator=RuleOperator.gt,
    target_value=0.1
)

# Create a ruleset
ruleset = Ruleset(rules=[rule])

# update the stage
stage = update_protect_stage(
    stage_name="My stage",
    prioritized_rulesets=[ruleset],
)
print("updated", stage.version)

from stageguard.client import pause_protect_stage

# Pause a stage
pause_protect_stage(stage_name="My stage")

from stageguard.client import resume_protect_stage

# Resume the stage
resume_protect_stage(stage_name="My stage")
print("resumed", get_protect_stage(stage_name="My stage").paused)
