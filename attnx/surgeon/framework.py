"""The pass framework: a pass is a pattern, named checks, and a rewrite, and it reports.

`Pass.candidates(graph)` yields every occurrence of its pattern; `Pass.checks` records on its
`Match` the named `Check`s that tell it from look-alikes (`softmax_free`,
`reassociation_saves_flops`, …), each one a test that can fail and says what it found. A match
is rewritten only when every check holds; the report says, per match, what changed or which
check failed and why. The order passes run in is `attnx.surgeon.pipeline.PASSES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import onnx_graphsurgeon as gs

from attnx.surgeon.guard import region_of


@dataclasses.dataclass(frozen=True)
class Check:
    """One named condition of a match, and in words why it holds or does not."""

    name: str
    ok: bool
    why: str


@dataclasses.dataclass
class Match:
    """One occurrence of a pass's pattern: where (`anchor`, a node name), what it bound, its checks."""

    anchor: str
    bound: Any
    checks: list[Check] = dataclasses.field(default_factory=list)

    def check(self, name: str, ok: bool, why: str) -> bool:
        """Record a check; returns `ok` so a pattern can stop at the first failure."""
        self.checks.append(Check(name, bool(ok), why))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)


@dataclasses.dataclass
class PassReport:
    """What one pass matched and changed: `details` has one entry per match."""

    name: str
    matched: int = 0
    rewritten: int = 0
    details: list[dict] = dataclasses.field(default_factory=list)

    # per rewritten match, the nodes the rewrite made and their boundary (attnx.surgeon.guard.Region)
    regions: list = dataclasses.field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"name": self.name, "matched": self.matched, "rewritten": self.rewritten, "details": self.details}


class Pass:
    """Subclasses set `name` and `summary` and implement `candidates`, `checks` and `rewrite`."""

    name: str = ""
    summary: str = ""
    min_opset: int = 0  # the default-domain opset the nodes this pass creates need

    def candidates(self, graph: gs.Graph) -> Iterator[tuple[str, tuple]]:
        """(anchor, found) for every occurrence of the pattern: the anchor a node name, `found` what
        `checks` takes after the match and the graph."""
        raise NotImplementedError

    def checks(self, match: Match, graph: gs.Graph, *found) -> None:
        """Record the checks of one candidate on `match`, and bind in `match.bound` what `rewrite` needs."""
        raise NotImplementedError

    def find(self, graph: gs.Graph, skip: dict[str, str] | None = None) -> list[Match]:
        """Every candidate as a `Match`, checked; an anchor in `skip` (anchor → why) fails the check
        `numeric_guard` with that reason (the numeric guard found its rewrite wrong or could not run it)."""
        matches = []
        for anchor, found in self.candidates(graph):
            match = Match(anchor, None)
            self.checks(match, graph, *found)
            if skip and anchor in skip:
                match.check("numeric_guard", False, skip[anchor])
            matches.append(match)
        return matches

    def rewrite(self, graph: gs.Graph, match: Match) -> str:
        """Apply one match whose checks all hold; returns what changed, in words."""
        raise NotImplementedError

    def run(self, graph: gs.Graph, opset: int, skip: dict[str, str] | None = None) -> PassReport:
        """Find, check and rewrite; `report.regions` records, per rewrite, the nodes it created and
        their boundary for the numeric guard (attnx.surgeon.guard)."""
        report = PassReport(self.name)
        for match in self.find(graph, skip):
            report.matched += 1
            entry = {"at": match.anchor, "checks": {c.name: c.ok for c in match.checks}}
            if self.min_opset and opset < self.min_opset:
                match.check("opset_supports_op", False,
                            f"the model's opset is {opset}; the fused node needs opset {self.min_opset} "
                            f"(export with opset_version={self.min_opset})")
                entry["checks"]["opset_supports_op"] = False
            failed = match.failed()
            if failed is None:
                entry["rewritten"] = True
                old = {id(n) for n in graph.nodes}
                entry["change"] = self.rewrite(graph, match)
                report.regions.append(region_of(match.anchor, graph, [n for n in graph.nodes if id(n) not in old]))
                report.rewritten += 1
            else:
                entry["rewritten"] = False
                entry["why"] = f"{failed.name}: {failed.why}"
            report.details.append(entry)
        return report

