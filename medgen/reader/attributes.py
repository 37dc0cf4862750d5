"""The words that describe a finding, as rule spans: where (lobe), how big, what type and margin (lesions); which
side and how much (effusions); how much and where (emphysema).

An attribute is read where a finding of its kind is: in a clause with a finding word of that kind, else in its
sentence; a lesion's words also in a sentence that goes on about the lesion before it without naming it ('It
measures 9 mm.', 'Size: 8 x 6 mm.', '该病灶大小约24mm×20mm'). A grade word goes to the nearer of the effusion and
emphysema words around it. `medgen.reader.assemble` then gives each span to its finding.

- Lobe: `medgen.reader.sites`. A phrase corrected on the spot ('in the LUL, sorry, lower lobe of the right lung',
  '左肺下叶，应为右肺中叶') gives way to the correction.
- Size (`medgen.reader.sizes.find_sizes`): a prior size ('previously 7 mm', 'increased from 12 mm to ...',
  '原约8mm', '由8mm增大至12mm'), a solid component's size ('with a 6 mm solid component', '实性成分约8mm') and other
  measures (short axis, thickness: '厚约', '短径') are not the lesion's size.
- Type: a ground-glass lesion with a solid component (not 'no solid component', '未见实性成分') is part-solid.
- Effusion side: side words outside lobe phrases; predominance ('more on the right', 'right greater than left',
  '右侧为著') says both sides have fluid: bilateral.
- Emphysema distribution: upper-lobe words ('more prominent in the upper lobes', '以双上肺为著', 'apical
  predominance') in an emphysema clause that names no lesion.
"""

from __future__ import annotations

import re
from collections import defaultdict

from medgen.reader.decode import TaggedSpan
from medgen.reader.lexicon import Match, longest_first
from medgen.reader.text import Segments

_NEGATED_COMPONENT = re.compile(r"(?:\bno\b|\bwithout\b|\bnot\b|\babsent\b|未见|无|不伴|未)\W{0,3}(?:\w+\s+){0,2}$",
                                re.IGNORECASE)
_MORE = re.compile(r"(?:\bmost|\bmore|\bparticularly|\bespecially|\bslightly)\s*$", re.IGNORECASE)
_LESION_AFTER = re.compile(r"^[\s-]*(?:[a-z]+[\s-]+){0,2}?(?:nodul|mass|lesion|opacit|focus|foci|ggo|ggn)"
                           r"|^[^，,；;。]{0,4}(?:结节|肿块|病灶|团块)", re.IGNORECASE)


class _Context:
    """Which finding kinds each clause and sentence names, and the vetoed ranges."""

    def __init__(self, text: str, lex, seg: Segments, targets, vetoes):
        self.text, self.lex, self.seg, self.vetoes = text, lex, seg, vetoes
        self.clause_kinds, self.sentence_kinds = defaultdict(set), defaultdict(set)
        self.anchors = targets
        for t in targets:
            self.clause_kinds[int(seg.clause[t.start])].add(t.kind)
            self.sentence_kinds[int(seg.sentence[t.start])].add(t.kind)
        self._continues: dict[int, bool] = {}
        self.negated: list[tuple[int, int]] = []

    def is_negated(self, m) -> bool:
        return any(lo <= m.start and m.end <= hi for lo, hi in self.negated)

    def vetoed(self, pos: int, group: str) -> bool:
        return any(lo <= pos < hi and group in groups for lo, hi, groups, _ in self.vetoes)

    def kinds(self, pos: int) -> tuple[set, set]:
        return self.clause_kinds[int(self.seg.clause[pos])], self.sentence_kinds[int(self.seg.sentence[pos])]

    def lesion_context(self, pos: int) -> bool:
        """Lesion words here describe a lesion: the clause names one, or names no other finding while its sentence
        names a lesion, or the sentence names none and goes on about the lesion before it."""
        clause, sentence = self.kinds(pos)
        if "les" in clause:
            return True
        if clause:
            return False
        return "les" in sentence or (not sentence and self.continues(pos))

    def continues(self, pos: int) -> bool:
        sid = int(self.seg.sentence[pos])
        if sid not in self._continues:
            lo, hi = self.sentence_bounds(pos)
            body = self.text[lo:hi].lstrip(" \t\n-*•0123456789.)、，,:：")
            starts = [m for m in self.lex.find("anaphora", body) if m.start == 0]
            short = len(re.findall(r"[A-Za-z]+|[\u4e00-\u9fff]", body)) <= (6 if self.lex.language == "en" else 10)
            organ = self.lex.has("not_lung", body)
            self._continues[sid] = bool(starts) or (not organ and (short or self.lex.has("pronoun", body)))
        return self._continues[sid]

    def sentence_bounds(self, pos: int) -> tuple[int, int]:
        return _run_bounds(self.seg.sentence, pos, len(self.text))

    def clause_bounds(self, pos: int) -> tuple[int, int]:
        return _run_bounds(self.seg.clause, pos, len(self.text))

    def nearest_anchor(self, start: int, end: int, kinds: tuple[str, ...]):
        """The nearest finding word of `kinds` in the clause, else in the sentence."""
        for unit in (self.seg.clause, self.seg.sentence):
            here = [t for t in self.anchors if t.kind in kinds and unit[t.start] == unit[start]]
            if here:
                return min(here, key=lambda t: max(t.start - end, start - t.end, 0))
        return None


def _span(group: str, value: str, start: int, end: int, text: str, score: float = 1.0) -> TaggedSpan:
    return TaggedSpan(group, value, start, end, text[start:end], score, "rules")


def attribute_spans(text: str, lex, seg: Segments, sites, sizes, targets, vetoes, negated) -> list[TaggedSpan]:
    """Attribute spans; `negated`: character ranges under a negation ('未见分叶及毛刺': no margin word there)."""
    ctx = _Context(text, lex, seg, targets, vetoes)
    ctx.negated = negated
    return [*_locations(ctx, sites), *_sizes(ctx, sizes), *_types(ctx), *_margins(ctx), *_effusion_sides(ctx, sites),
            *_grades(ctx, sites), *_distribution(ctx, sites)]


def _locations(ctx: _Context, sites) -> list[TaggedSpan]:
    out = []
    corrections = ctx.lex.find("correction", ctx.text)
    for i, site in enumerate(sites):
        if site.zone is None or ctx.vetoed(site.start, "loc") or not ctx.lesion_context(site.start):
            continue
        nxt = sites[i + 1] if i + 1 < len(sites) else None
        if nxt is not None and nxt.zone and any(site.end <= c.start and c.end <= nxt.start for c in corrections) \
                and nxt.start - site.end <= 40:
            continue  # corrected on the spot: the next phrase replaces it
        side = site.side or "right"  # a side-less lobe: the section heading's side is applied at assembly
        lobe = "left_upper" if (side, site.zone) == ("left", "middle") else f"{side}_{site.zone}"
        score = 1.0 if re.search(r"right|left|\b[rl][uml]l\b|lingul|[左右舌]", site.text, re.IGNORECASE) else 0.7
        out.append(_span("loc", lobe, site.start, site.end, ctx.text, score))
    return out


def _size_role(ctx: _Context, start: int, end: int) -> str | None:
    """'prior', 'component' or 'other' for a size that is not the lesion's current size, else None."""
    lo, hi = ctx.clause_bounds(start)
    paren = max(ctx.text.rfind("(", lo, start), ctx.text.rfind("（", lo, start))
    window_lo = max(lo, paren if paren >= 0 else lo, start - 40)
    before = ctx.text[window_lo:start]
    after = ctx.text[end:min(hi, end + 24)]
    lex = ctx.lex
    if lex.find("component", before[-30:]) or re.match(r"^\s*(?:\w+\s+)?(?:solid\s+(?:component|portion|part))",
                                                        after, re.IGNORECASE):
        return "component"
    if lex.find("not_size", before[-16:]) or lex.find("not_size", after[:16]):
        return "other"
    prior = lex.find("prior_size", before)
    current = lex.find("current_size", before)
    if prior and (not current or prior[-1].start > current[-1].start):
        return "prior"
    return None


def _sizes(ctx: _Context, sizes) -> list[TaggedSpan]:
    out = []
    for start, end, _ in sizes:
        if ctx.vetoed(start, "size"):
            continue
        role = _size_role(ctx, start, end)
        if role is not None:
            ctx.vetoes.append((start, end, ("size",), f"{role} size"))
            continue
        if not ctx.lesion_context(start):
            if ctx.kinds(start)[0] or ctx.kinds(start)[1]:
                ctx.vetoes.append((start, end, ("size",), "the size of another finding"))
            continue
        out.append(_span("size", "size", start, end, ctx.text))
    return out


def _types(ctx: _Context) -> list[TaggedSpan]:
    matches = ctx.lex.find("type", ctx.text)
    components = [c for c in ctx.lex.find("component", ctx.text)
                  if not _NEGATED_COMPONENT.search(ctx.text[max(0, c.start - 14):c.start])]
    matches = [m for m in matches if not ctx.is_negated(m)
               and not any(c.start <= m.start < c.end for c in ctx.lex.find("component", ctx.text))]
    out = []
    for m in matches:
        if ctx.vetoed(m.start, "type") or not ctx.lesion_context(m.start):
            continue
        value = m.value
        if value == "ground-glass":
            lo, hi = ctx.sentence_bounds(m.start)
            if any(lo <= c.start < hi for c in components):
                value = "part-solid"
        out.append(_span("type", value, m.start, m.end, ctx.text))
    for c in ctx.lex.find("component", ctx.text):  # a solid component and no type word: part-solid; "without
        lo, hi = ctx.sentence_bounds(c.start)        # a solid component": ground-glass
        if not any(lo <= s.start < hi for s in out) and ctx.lesion_context(c.start) and not ctx.vetoed(c.start, "type"):
            out.append(_span("type", "part-solid" if c in components else "ground-glass", c.start, c.end, ctx.text))
    return out


def _margins(ctx: _Context) -> list[TaggedSpan]:
    return [_span("margin", m.value, m.start, m.end, ctx.text) for m in ctx.lex.find("margin", ctx.text)
            if not ctx.vetoed(m.start, "margin") and ctx.lesion_context(m.start) and not ctx.is_negated(m)]


def _effusion_sides(ctx: _Context, sites) -> list[TaggedSpan]:
    lobes = [(s.start, s.end) for s in sites if s.zone and "les" in ctx.kinds(s.start)[0]]
    found = longest_first([*ctx.lex.find("sides", ctx.text),
                           *(Match(m.start, m.end, "bilateral", m.text) for m in ctx.lex.find("predominance", ctx.text))])
    out = []
    for m in found:
        if any(lo <= m.start < hi for lo, hi in lobes) or ctx.vetoed(m.start, "eside"):
            continue
        clause, sentence = ctx.kinds(m.start)
        if "eff" in clause or ("eff" in sentence and not clause):
            anchor = ctx.nearest_anchor(m.start, m.end, ("eff", "les", "emph"))
            if anchor is not None and anchor.kind != "eff" and "eff" not in clause:
                continue
            out.append(_span("eside", m.value, m.start, m.end, ctx.text))
    return out


def _grades(ctx: _Context, sites) -> list[TaggedSpan]:
    eff = {(m.start, m.end): m.value for m in ctx.lex.find("effusion_grade", ctx.text)}
    emph = {(m.start, m.end): m.value for m in ctx.lex.find("emphysema_grade", ctx.text)}
    words = longest_first([Match(s, e, "", ctx.text[s:e]) for s, e in {*eff, *emph}])
    places = [*(s.end for s in sites), *(m.end for m in ctx.lex.find("emphysema_upper", ctx.text))]
    out = []
    for m in words:
        if _MORE.search(ctx.text[max(0, m.start - 14):m.start]) or _LESION_AFTER.match(ctx.text[m.end:m.end + 30]):
            continue
        if ctx.lex.language == "zh" and any(0 <= m.start - p <= 1 for p in places):
            continue  # "双上肺明显": where it is most marked, not how much
        if ctx.lex.find("prior_size", ctx.text[max(0, m.start - 16):m.start]):
            before = ctx.text[max(0, m.start - 16):m.start]
            if ctx.lex.find("prior_size", before)[-1].end >= len(before.rstrip()) - 2:
                continue  # "decreased from moderate", "原为少量": the grade before
        anchor = ctx.nearest_anchor(m.start, m.end, ("eff", "emph", "les"))
        if anchor is None or anchor.kind == "les" or ctx.is_negated(m):
            continue
        table, group = (eff, "egrade") if anchor.kind == "eff" else (emph, "xgrade")
        value = table.get((m.start, m.end))
        if value is None:  # a word only the other table knows (the longest match may differ)
            inner = [(s, e) for s, e in table if m.start <= s and e <= m.end]
            value = table[inner[0]] if inner else None
        if value is not None and not ctx.vetoed(m.start, group):
            out.append(_span(group, value, m.start, m.end, ctx.text))
    return out


def _distribution(ctx: _Context, sites) -> list[TaggedSpan]:
    out = []
    for m in ctx.lex.find("emphysema_upper", ctx.text):
        clause, sentence = ctx.kinds(m.start)
        if "emph" not in clause and not ("emph" in sentence and "les" not in clause):
            continue
        if "les" in clause and any(s.start <= m.start < s.end and s.side for s in sites):
            continue  # "upper lobe" of a lesion's site
        out.append(_span("xdist", "upper", m.start, m.end, ctx.text))
    return out


def _run_bounds(ids, pos: int, n: int) -> tuple[int, int]:
    """[lo, hi) of the run of equal segment ids (sentence or clause) around character `pos`."""
    lo, hi = pos, pos
    while lo > 0 and ids[lo - 1] == ids[pos]:
        lo -= 1
    while hi < n and ids[hi] == ids[pos]:
        hi += 1
    return lo, hi
