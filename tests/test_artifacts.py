from __future__ import annotations

import json
import random

import jsonschema
import pytest
from pydantic import ValidationError

from stageguard.compiler.pipeline import compile_paths, compile_text
from stageguard.runtime.canonical import ArtifactDocument, artifact_bytes, content_digest
from stageguard.runtime.model import Artifact
from stageguard.runtime.registry import RegistryError, parse_artifact
from stageguard.runtime.schema import artifact_schema, schema_text, shipped_schema_text
from tests.conftest import POLICIES

SIMPLE = ('project p\nstage s {\n  ruleset r {\n    when output_toxicity > 0.5\n'
          '    override {\n      choice "no"\n    }\n  }\n}\n')


def _artifacts():
    result = compile_paths([str(POLICIES)])
    assert result.ok, result.diagnostics
    return result.artifacts


def test_example_policies_compile_to_valid_artifacts() -> None:
    arts = _artifacts()
    assert {a.stage for a in arts} == {"input_guard", "output_guard", "agent_tools"}
    validator = jsonschema.Draft202012Validator(artifact_schema())
    for art in arts:
        validator.validate(json.loads(art.to_bytes(1)))
        assert art.to_artifact().stage.name == art.stage


def test_checked_in_schema_matches_the_models() -> None:
    assert shipped_schema_text() == schema_text(), (
        "run `python -m stageguard.runtime.schema` and commit the result")


def test_bytes_are_canonical_and_equal_the_models_own_serialisation() -> None:
    for art in _artifacts():
        data = art.to_bytes(3)
        assert data.endswith(b"\n") and b"\n" not in data[:-1]
        doc = json.loads(data)
        assert json.dumps(doc, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode() + b"\n" == data
        # The build path's bytes are exactly what the pydantic models would write.
        model = parse_artifact(data)
        assert model.version == 3
        assert artifact_bytes(model) == data
        assert ArtifactDocument.from_artifact(model).to_bytes(3) == data


def test_compilation_is_deterministic_across_runs_and_file_order(tmp_path) -> None:
    first = [a.to_bytes(1) for a in _artifacts()]
    second = [a.to_bytes(1) for a in _artifacts()]
    assert first == second
    # The same files presented in another order give the same artifacts.
    from stageguard.compiler.pipeline import compile_sources
    from stageguard.compiler.sources import load
    sources, _ = load([str(POLICIES)])
    shuffled = sources[:]
    random.Random(3).shuffle(shuffled)
    again = compile_sources(shuffled)
    by_name = {a.stage: a.to_bytes(1) for a in again.artifacts}
    assert sorted(by_name.values()) == sorted(first)


def test_digest_ignores_layout_comments_and_version_but_not_meaning() -> None:
    base = compile_text(SIMPLE, "a.sg").artifacts[0]
    relaid = compile_text("# a comment\n\n" + SIMPLE.replace("\n    ", "\n        "),
                          "b.sg").artifacts[0]
    assert relaid.to_artifact().source_map != base.to_artifact().source_map
    assert relaid.digest == base.digest
    assert base.to_artifact(7).digest == base.digest
    changed = compile_text(SIMPLE.replace("0.5", "0.6"), "a.sg").artifacts[0]
    assert changed.digest != base.digest
    renamed = compile_text(SIMPLE.replace("ruleset r", "ruleset q"), "a.sg").artifacts[0]
    assert renamed.digest != base.digest


def test_aliases_and_number_spellings_hash_equally() -> None:
    a = compile_text(SIMPLE, "a.sg").artifacts[0]
    b = compile_text(SIMPLE.replace("output_toxicity > 0.5", "toxicity > 0.50"),
                     "a.sg").artifacts[0]
    assert a.digest == b.digest


def test_digest_is_sha256_of_canonical_content() -> None:
    art = compile_text(SIMPLE, "a.sg").artifacts[0]
    doc = json.loads(art.to_bytes(1))
    assert content_digest(doc) == art.digest
    import hashlib
    content = {k: v for k, v in doc.items()
               if k not in ("version", "digest", "compiler", "source_map")}
    raw = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert art.digest == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def test_source_map_points_at_rulesets_and_rules() -> None:
    art = compile_text(SIMPLE, "a.sg").artifacts[0].to_artifact()
    assert art.source_map.file == "a.sg"
    assert art.source_map.stage == (2, 1)
    (loc,) = art.source_map.rulesets
    assert loc.ruleset == (3, 3)
    assert loc.rules == ((4, 5),)


@pytest.mark.parametrize("mutate", [
    lambda d: d["rulesets"][0]["rules"][0].update(operator="contains"),
    lambda d: d["rulesets"][0]["action"].update(choices=[]),
    lambda d: d["rulesets"][0]["action"].update(type="BLOCK"),
    lambda d: d["rulesets"].append(d["rulesets"][0]),
    lambda d: d["source_map"]["rulesets"].clear(),
    lambda d: d["rulesets"][0]["rules"][0].update(metric="unlisted"),
    lambda d: d.update(extra_field=1),
])
def test_models_reject_incoherent_documents(mutate) -> None:
    doc = json.loads(compile_text(SIMPLE, "a.sg").artifacts[0].to_bytes(1))
    mutate(doc)
    with pytest.raises(ValidationError):
        Artifact.model_validate(doc)


def test_tampered_truncated_and_future_artifacts_are_refused() -> None:
    data = compile_text(SIMPLE, "a.sg").artifacts[0].to_bytes(1)
    with pytest.raises(RegistryError, match="digest"):
        parse_artifact(data.replace(b'"no"', b'"yes"'), "x.json")
    with pytest.raises(RegistryError, match="not JSON"):
        parse_artifact(data[: len(data) // 2], "x.json")
    future = data.replace(b'"format_version":1', b'"format_version":2')
    with pytest.raises(RegistryError, match="format version 2"):
        parse_artifact(future, "x.json")


def test_digest_is_verified_for_non_canonical_layouts_too() -> None:
    # Pretty-printed (same content) loads; the same layout with one value changed does not.
    data = compile_text(SIMPLE, "a.sg").artifacts[0].to_bytes(1)
    doc = json.loads(data)
    pretty = json.dumps(doc, indent=2).encode()
    assert parse_artifact(pretty).digest == doc["digest"]
    doc["rulesets"][0]["rules"][0]["target_value"] = 0.9
    with pytest.raises(RegistryError, match="digest"):
        parse_artifact(json.dumps(doc, indent=2).encode())


def test_canonical_fast_check_cannot_be_fooled_by_extra_or_moved_members() -> None:
    data = compile_text(SIMPLE, "a.sg").artifacts[0].to_bytes(1)
    # A duplicate `rulesets` key smuggled into the tail overrides the content on parsing.
    evil = data.replace(b',"source_map":', b',"rulesets":[],"source_map":', 1)
    with pytest.raises(RegistryError):
        parse_artifact(evil)
