"""Wire shapes of the HTTP API (pydantic): Galileo's request and stage bodies, stageguard's
additions (fail mode, custom metrics, versions, source publishing), and the error bodies.

Request models forbid unknown fields, so a misspelt field is a 422 naming its path instead
of a silently ignored setting. Rulesets are typed here for the OpenAPI document and for
field paths; their meaning (metric types, labels, ranges) is then checked by the runtime,
the one place that decides what a rule means.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from stageguard.runtime import limits
from stageguard.runtime.model import IDENTIFIER, NAME, MetricSpec

# Rulesets and metrics are named by identifiers; projects and stages by names (free text
# that can be a registry path part, as Galileo's "My stage").
Name = Annotated[str, Field(pattern=IDENTIFIER, min_length=1, max_length=limits.NAME)]
StageName = Annotated[str, Field(pattern=NAME, min_length=1, max_length=limits.NAME)]
# A project or stage in a url path: its name, or its id (which is a name too).
REF = NAME
# A version, read as JSON Schema's integer: 3 and 3.0 alike (strict pydantic would refuse 3.0).
Version = Annotated[int, Field(ge=1), BeforeValidator(
    lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
StringMap = Annotated[dict[Annotated[str, Field(max_length=limits.METADATA_KEY)],
                           Annotated[str, Field(max_length=limits.METADATA_VALUE)]],
                      Field(max_length=limits.METADATA)]
Operator = Literal["gt", "lt", "gte", "lte", "eq", "neq", "contains", "all", "any", "empty",
                   "not_empty"]
SubscriptionStatus = Literal["triggered", "not_triggered", "failed", "error", "timeout",
                             "paused", "skipped"]
Target = float | str | list[str] | None
MetricValue = float | str | list[str] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubscriptionIn(_In):
    url: str = Field(max_length=limits.URL)
    statuses: list[SubscriptionStatus] = Field(default_factory=lambda: ["triggered"])  # type: ignore[arg-type]


class ActionIn(_In):
    type: Literal["OVERRIDE", "PASSTHROUGH"] = "PASSTHROUGH"
    choices: list[str] | None = None
    subscriptions: list[SubscriptionIn] = Field(default_factory=list)


class RuleIn(_In):
    metric: str = Field(min_length=1, max_length=limits.NAME)
    operator: Operator
    target_value: Target = None


class RulesetIn(_In):
    name: Name | None = None
    description: str | None = None
    rules: list[RuleIn] = Field(min_length=1)
    action: ActionIn | None = None


Rulesets = Annotated[
    list[RulesetIn] | str,
    Field(description="Galileo ruleset objects in priority order, or stageguard source text "
          "holding `ruleset NAME { … }` blocks"),
]


class PayloadIn(_In):
    # At least one of the texts is non-empty (said in the schema, so clients know).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": ["input"], "properties": {"input": {"type": "string", "minLength": 1}}},
        {"required": ["output"], "properties": {"output": {"type": "string",
                                                           "minLength": 1}}}]})

    input: str | None = None
    output: str | None = None
    metrics: dict[str, MetricValue] | None = Field(
        default=None, description="Precomputed metric values (no scorer runs for these)")


class InvokeRequest(_In):
    """Galileo's invoke request. The stage is named by `stage_id`, or by `stage_name` with
    `project_name` or `project_id` (or alone, when the name is unique)."""

    payload: PayloadIn
    project_name: StageName | None = None
    project_id: str | None = Field(default=None, description="Wins over project_name when "
                                   "both are given, as in Galileo")
    stage_name: StageName | None = None
    stage_id: str | None = None
    stage_version: Version | None = None
    prioritized_rulesets: Rulesets | None = None
    rulesets: Rulesets | None = Field(default=None, description="Read when "
                                      "prioritized_rulesets is absent (Galileo's older key)")
    timeout: float = Field(default=300.0, gt=0, le=limits.TIMEOUT)
    metadata: StringMap | None = None
    headers: StringMap | None = Field(default=None, description="Echoed in the body, and as "
                                      "HTTP headers except those that frame the response "
                                      "(Content-Length, Transfer-Encoding, Connection, …)")


class MetricIn(_In):
    """A custom metric's declaration (the artifact's `MetricSpec`, on the wire)."""

    name: Name
    type: Literal["score", "number", "label", "labels"]
    description: str | None = Field(default=None, max_length=limits.DESCRIPTION)
    minimum: float | None = None
    maximum: float | None = None
    labels: list[Annotated[str, Field(max_length=limits.LABEL)]] | None = Field(
        default=None, max_length=limits.LABELS)
    builtin: bool = Field(default=False, description="Always false: a declared metric is "
                          "not a built-in one")

    def spec(self) -> MetricSpec:
        if self.builtin:
            raise ValueError("a declared metric is not built in (`builtin` is false)")
        return MetricSpec.model_validate(self.model_dump())


class StageCreate(_In):
    """Galileo's stage-create body, plus `fail_mode` and custom `metrics`."""

    name: StageName
    project_id: str | None = Field(default=None, description="Galileo's body names the "
                                   "project again; it must be the url's")
    description: str | None = Field(default=None, max_length=limits.DESCRIPTION)
    type: Literal["central", "local"] | None = Field(
        default=None, description="Default: local, as in Galileo, or central when the body "
        "brings rulesets (Galileo refuses a local stage with rulesets)")
    paused: bool = False
    prioritized_rulesets: Rulesets | None = None
    rulesets: Rulesets | None = None
    fail_mode: Literal["open", "closed"] = "open"
    metrics: list[MetricIn] = Field(default_factory=list, description="Custom metrics the "
                                      "rulesets use (built-in metrics need no declaration)")


class StageUpdate(_In):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": ["prioritized_rulesets"]}, {"required": ["rulesets"]}]})

    prioritized_rulesets: Rulesets | None = None
    rulesets: Rulesets | None = None


class SourcePublish(_In):
    """Policy files to compile; the stage named in the path is published from them."""

    files: dict[str, str] | None = Field(
        default=None, description="File name to stageguard source (metric declarations may "
        "sit in their own file)")
    source: str | None = Field(default=None, description="One file's source (named "
                               "`<request>.sg` in diagnostics)")
    project: StageName | None = Field(default=None, description="Needed only when the sources "
                                 "hold the stage name in more than one project")


class StageOut(BaseModel):
    id: str
    name: str
    project: str
    project_id: str
    created_by: str = Field(description="Galileo's creator id; stageguard does not record "
                            "creators, so this is one fixed UUID4 for every stage")
    type: Literal["central", "local"]
    description: str | None
    paused: bool
    version: int
    versions: list[int]
    fail_mode: Literal["open", "closed"]
    candidate: CandidateOut | None = Field(default=None, description="stageguard: a shadow or "
                                           "rollout version beside `version`")


class CandidateOut(BaseModel):
    version: int
    mode: Literal["shadow", "rollout"]
    percent: float
    key: str | None


class ServingIn(_In):
    """Change what a central stage serves: `shadow`/`rollout` a version beside the serving
    one, `promote` the candidate, `rollback` to a version, `clear` the candidate."""

    action: Literal["shadow", "rollout", "promote", "rollback", "clear"]
    version: Version | None = None
    percent: float | None = Field(default=None, ge=0, le=100)
    key: str | None = Field(default=None, min_length=1, max_length=256)


class EventOut(BaseModel):
    revision: int
    kind: str
    version: int | None
    at: str
    note: str | None


class VersionOut(BaseModel):
    version: int
    digest: str
    created_at: str
    latest: bool


class PublishOut(BaseModel):
    stage: StageOut
    created: bool = Field(description="False when the sources compiled to the latest version")
    diagnostics: list[dict[str, Any]] = Field(description="Warnings and notes (errors "
                                              "refuse the publication with a 422)")


class ErrorOut(BaseModel):
    code: str = Field(description="bad_request, not_found, invalid_request, validation_error, "
                      "policy_errors, unauthorized, forbidden, payload_too_large, internal")
    detail: str | list[dict[str, Any]]
    trace_id: str
    diagnostics: list[dict[str, Any]] | None = None


class TraceMetadataOut(BaseModel):
    id: str
    received_at: int
    response_at: int
    execution_time: float


class ActionResultOut(BaseModel):
    type: Literal["OVERRIDE", "PASSTHROUGH"]
    value: str


class StageMetadataOut(BaseModel):
    project: str
    stage_name: str
    stage_id: str
    stage_version: int
    stage_type: str


class RuleResultOut(BaseModel):
    metric: str
    operator: Operator
    target_value: Target
    status: Literal["TRIGGERED", "NOT_TRIGGERED", "FAILED", "TIMEOUT", "ERROR", "SKIPPED"] = \
        Field(description="SKIPPED: not evaluated: an earlier rule of the ruleset was false, "
              "or the decision was made before the rule was needed")
    value: MetricValue
    error: str | None


class RulesetOut(BaseModel):
    name: str
    description: str | None
    rules: list[RuleIn]
    action: ActionIn


class RulesetResultOut(BaseModel):
    name: str
    status: Literal["TRIGGERED", "NOT_TRIGGERED", "FAILED", "TIMEOUT", "ERROR", "SKIPPED"] = \
        Field(description="SKIPPED: after the winning ruleset, it would have needed a scored "
              "metric (docs/semantics.md, \"Scored metrics\")")
    ruleset: RulesetOut
    rule_results: list[RuleResultOut]


class MetricResultOut(BaseModel):
    value: MetricValue
    status: Literal["success", "failed", "timeout", "error"]
    source: Literal["payload", "scorer", "none"]
    execution_time: float
    error: str | None


class PlainInvokeResponse(BaseModel):
    """Galileo's Response in its plain form (`?form=plain`)."""

    text: str
    status: Literal["TRIGGERED", "NOT_TRIGGERED", "PAUSED", "SKIPPED", "TIMEOUT", "FAILED",
                    "ERROR"]
    trace_metadata: TraceMetadataOut


class InvokeResponse(BaseModel):
    """Galileo's Response in its rich form (documentation only: the server writes the
    runtime's own `Response.to_dict()`, which a test validates against this model)."""

    text: str
    status: Literal["TRIGGERED", "NOT_TRIGGERED", "PAUSED", "SKIPPED", "TIMEOUT", "FAILED",
                    "ERROR"]
    trace_metadata: TraceMetadataOut
    action_result: ActionResultOut | None
    stage_metadata: StageMetadataOut
    ruleset_results: list[RulesetResultOut] = Field(description="Every ruleset in priority "
                                                    "order (empty when paused or skipped)")
    metric_results: dict[str, MetricResultOut]
    metadata: dict[str, str] | None
    headers: dict[str, str] | None
    error: str | None = Field(default=None, description="Why the server refused to decide "
                              "(status ERROR): a view of the registry older than its "
                              "max_staleness, with on_stale fail_closed")


class ApiKeyLogin(_In):
    """Galileo's api-key login body: a stageguard token as the key."""

    api_key: str = Field(min_length=1, max_length=4096)


class LoginOut(BaseModel):
    access_token: str = Field(description="A session token (a JWT) for the bearer header")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class ProjectOut(BaseModel):
    """The fields of Galileo's ProjectDB its SDK reads."""

    id: str
    name: str
    type: str = "gen_ai"
    created_by: str
    created_by_user: dict[str, str]
    runs: list[Any] = Field(default_factory=list)
    created_at: str
    updated_at: str
