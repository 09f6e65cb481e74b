"""Section "Configuration and versions": the run's and each model's configuration, and the
package versions."""

from __future__ import annotations

import json

from realdeal.report.document import Block, Code, Note
from realdeal.report.run import environment_versions
from realdeal.report.sections.context import Context


def config_section(ctx: Context) -> list[Block]:
    m = ctx.run.manifest
    blocks: list[Block] = []
    if m.get("config") is not None:
        blocks.append(Code("Run configuration (run.json)", json.dumps(m["config"], indent=2)))
    else:
        blocks.append(Note('run.json has no "config".'))
    for name, folder in (m.get("models") or {}).items():
        path = ctx.run.path(folder) / "config.json"
        if path.is_file():
            try:
                text = json.dumps(json.loads(path.read_text()), indent=2)
            except (OSError, ValueError) as e:
                blocks.append(Note(f"{ctx.run.rel(path)} unreadable ({e})."))
                continue
            blocks.append(Code(f"{name} configuration ({ctx.run.rel(path)})", text))
    versions = m.get("versions")
    source = "run.json"
    if not versions:
        versions, source = environment_versions(), "this environment (run.json has none)"
    blocks.append(Code(f"Package versions ({source})", json.dumps(versions, indent=2)))
    return blocks
