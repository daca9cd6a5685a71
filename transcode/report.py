"""Structured reports rendered for people (PS3.18 §10.4.1.1.3, §9.1.2.1.4): the content tree of
an SR instance (PS3.3 C.17.3; Basic, Enhanced and Comprehensive SR, Key Object Selection,
Measurement Reports of TID 1500 and the like) as an HTML page, plain text or a PDF.

``read_report`` turns an instance's DICOM JSON model (the metadata the archive keeps) into a ``Report``: a header of patient, study and
document facts, and the tree of items, each with its relationship, concept name, value (codes
with their meaning and code, numbers with their units, dates and names formatted, spatial
coordinates summarised) and, for references to images and other objects, a link made by the
caller's ``link`` function. ``as_html``, ``as_text`` and ``as_pdf`` lay it out. A hostile
report costs a bound: items beyond MAX_ITEMS, and nesting beyond MAX_DEPTH, are counted, not
rendered; the tree is walked without recursion.
"""
from __future__ import annotations

import html
import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

MAX_ITEMS = 20_000     # content items rendered; a larger report says how many were left out
MAX_DEPTH = 64         # nesting rendered
MAX_POINTS = 8         # coordinates shown of a SCOORD, SCOORD3D or TCOORD
PDF_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")   # Debian's fonts-dejavu-core

# (study UID, series UID, instance UID, frame numbers) → the URL of that object's rendered form,
# or None when it cannot be reached.
Link = Callable[[str, str, str, tuple[int, ...]], "str | None"]

RELATIONSHIPS = {"HAS OBS CONTEXT": "observation context", "HAS ACQ CONTEXT": "acquisition context",
                 "HAS CONCEPT MOD": "concept modifier", "HAS PROPERTIES": "property",
                 "INFERRED FROM": "inferred from", "SELECTED FROM": "selected from", "CONTAINS": ""}


@dataclass
class Item:
    depth: int
    number: str                 # its place in the tree, 1.2.3, as by-reference items name it
    relationship: str
    value_type: str
    concept: str                # the concept name's meaning
    code: str = ""              # the concept name's (value, scheme)
    value: str = ""
    value_code: str = ""        # a CODE value's (value, scheme)
    link: str | None = None     # IMAGE, COMPOSITE, WAVEFORM: where the object renders


@dataclass
class Report:
    title: str
    header: list[tuple[str, str]]
    items: list[Item] = field(default_factory=list)
    left_out: int = 0           # items beyond MAX_ITEMS or MAX_DEPTH


# The attributes read, by keyword, as the DICOM JSON model's keys.
_KEYWORDS = (
    "ContentSequence", "ValueType", "RelationshipType", "ConceptNameCodeSequence", "ConceptCodeSequence",
    "CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator", "CodeMeaning", "TextValue",
    "PersonName", "Date", "Time", "DateTime", "UID", "MeasuredValueSequence", "NumericValue",
    "MeasurementUnitsCodeSequence", "NumericValueQualifierCodeSequence", "ReferencedSOPSequence",
    "ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "ReferencedFrameNumber", "GraphicType", "GraphicData",
    "TemporalRangeType", "ReferencedSamplePositions", "ReferencedTimeOffsets", "ReferencedDateTime",
    "ReferencedContentItemIdentifier", "CurrentRequestedProcedureEvidenceSequence",
    "PertinentOtherEvidenceSequence", "ReferencedSeriesSequence", "StudyInstanceUID", "SeriesInstanceUID",
    "VerifyingObserverSequence", "VerifyingObserverName", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyDescription", "StudyDate", "AccessionNumber", "ReferringPhysicianName", "ContentDate",
    "ContentTime", "SeriesDescription", "CompletionFlag", "VerificationFlag", "InstitutionName", "Manufacturer",
)
TAG = {keyword: f"{tag_for_keyword(keyword):08X}" for keyword in _KEYWORDS}


def _values(model: dict, keyword: str) -> list:
    element = model.get(TAG[keyword])
    values = element.get("Value") if isinstance(element, dict) else None
    return values if isinstance(values, list) else []


def _first(model: dict, keyword: str) -> str:
    """The first value as text ("" when absent); a PN as people write it."""
    values = _values(model, keyword)
    if not values or values[0] is None:
        return ""
    value = values[0]
    if isinstance(value, dict):   # PN: its groups
        return person(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _items(model: dict, keyword: str) -> list[dict]:
    return [item for item in _values(model, keyword) if isinstance(item, dict)]


def read_report(model: dict, link: Link) -> Report:
    """The report of an SR instance's DICOM JSON model (the metadata the archive keeps: every
    text inline, no file to parse). ``link`` makes the URL of a referenced object from the study
    and series the report's evidence sequences place it in."""
    places = _evidence(model)
    report = Report(_concept(model)[0] or "Structured report", _header(model))
    # (children, depth, number of the parent) on a stack: no recursion on peer data
    stack: list[tuple[Iterator[dict], int, str]] = [(iter(_items(model, "ContentSequence")), 1, "1")]
    counters: list[int] = [0]
    while stack:
        children, depth, parent = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            counters.pop()
            continue
        counters[-1] += 1
        number = f"{parent}.{counters[-1]}"
        grandchildren = _items(child, "ContentSequence")
        if len(report.items) >= MAX_ITEMS or depth > MAX_DEPTH:
            report.left_out += 1 + _count(grandchildren)
            continue
        report.items.append(_item(child, depth, number, places, link))
        if grandchildren:
            stack.append((iter(grandchildren), depth + 1, number))
            counters.append(0)
    return report


def _count(items: list[dict]) -> int:
    total, stack = 0, list(items)
    while stack:
        total += 1
        stack.extend(_items(stack.pop(), "ContentSequence"))
    return total


def _item(model: dict, depth: int, number: str, places: dict, link: Link) -> Item:
    concept, code = _concept(model)
    kind = _first(model, "ValueType")
    item = Item(depth, number, _first(model, "RelationshipType"), kind, concept, code)
    if not kind and _values(model, "ReferencedContentItemIdentifier"):   # by reference (PS3.3 C.17.3.2.5)
        identifier = ".".join(str(v) for v in _values(model, "ReferencedContentItemIdentifier"))
        item.value_type, item.value = "REFERENCE", f"see item {identifier}"
    elif kind == "TEXT":
        item.value = _first(model, "TextValue")
    elif kind == "CODE":
        item.value, item.value_code = _code(_items(model, "ConceptCodeSequence"))
    elif kind == "NUM":
        item.value = _numeric(model)
    elif kind == "PNAME":
        item.value = _first(model, "PersonName")
    elif kind in ("DATE", "TIME", "DATETIME"):
        keyword = {"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime"}[kind]
        item.value = {"DATE": date, "TIME": time, "DATETIME": datetime}[kind](_first(model, keyword))
    elif kind == "UIDREF":
        item.value = _first(model, "UID")
    elif kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        item.value, item.link = _reference(model, places, link)
    elif kind in ("SCOORD", "SCOORD3D"):
        item.value = _coordinates(_first(model, "GraphicType"), _values(model, "GraphicData"),
                                  3 if kind == "SCOORD3D" else 2)
    elif kind == "TCOORD":
        points = _values(model, "ReferencedSamplePositions") or _values(model, "ReferencedTimeOffsets") \
            or _values(model, "ReferencedDateTime")
        item.value = _coordinates(_first(model, "TemporalRangeType"), points, 1)
    return item


def _concept(model: dict) -> tuple[str, str]:
    return _code(_items(model, "ConceptNameCodeSequence"))


def _code(sequence: list[dict]) -> tuple[str, str]:
    """(meaning, "(value, scheme)") of the first item of a code sequence."""
    if not sequence:
        return "", ""
    code = sequence[0]
    value = _first(code, "CodeValue") or _first(code, "LongCodeValue") or _first(code, "URNCodeValue")
    scheme = _first(code, "CodingSchemeDesignator")
    return _first(code, "CodeMeaning"), f"({value}, {scheme})" if value else ""


def _numeric(model: dict) -> str:
    measured = _items(model, "MeasuredValueSequence")
    if not measured:
        return _code(_items(model, "NumericValueQualifierCodeSequence"))[0] or "(no value)"
    number = _first(measured[0], "NumericValue")
    units = _items(measured[0], "MeasurementUnitsCodeSequence")
    unit = ""
    if units:   # UCUM's code is what a reader knows (mm, cm2); "1" means no unit
        unit = _first(units[0], "CodeValue")
        unit = "" if unit == "1" else unit or _first(units[0], "CodeMeaning")
    return f"{number} {unit}".strip()


def _reference(model: dict, places: dict, link: Link) -> tuple[str, str | None]:
    sequence = _items(model, "ReferencedSOPSequence")
    if not sequence:
        return "(no reference)", None
    ref = sequence[0]
    uid = _first(ref, "ReferencedSOPInstanceUID")
    numbers = tuple(int(n) for n in _values(ref, "ReferencedFrameNumber") if isinstance(n, (int, float)))
    text = f"{UID(_first(ref, 'ReferencedSOPClassUID')).name} {uid}".strip()
    if numbers:
        text += " frame" + ("s " if len(numbers) > 1 else " ") + ", ".join(map(str, numbers[:MAX_POINTS]))
    place = places.get(uid)
    return text, (link(place[0], place[1], uid, numbers) if place else None)


def _evidence(model: dict) -> dict[str, tuple[str, str]]:
    """Instance UID → (study UID, series UID), from the evidence sequences (PS3.3 C.17.2)."""
    places: dict[str, tuple[str, str]] = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in _items(model, keyword):
            for series in _items(study, "ReferencedSeriesSequence"):
                for instance in _items(series, "ReferencedSOPSequence"):
                    places.setdefault(_first(instance, "ReferencedSOPInstanceUID"),
                                      (_first(study, "StudyInstanceUID"), _first(series, "SeriesInstanceUID")))
    return places


def _coordinates(kind: str, values: list, size: int) -> str:
    groups = [values[i:i + size] for i in range(0, len(values), size)]
    shown = " ".join("(" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in group) + ")"
                     for group in groups[:MAX_POINTS])
    more = f" … {len(groups) - MAX_POINTS} more" if len(groups) > MAX_POINTS else ""
    return f"{kind} {shown}{more}".strip()


def _header(model: dict) -> list[tuple[str, str]]:
    observers = [_first(o, "VerifyingObserverName") for o in _items(model, "VerifyingObserverSequence")]
    facts = [("Patient", _first(model, "PatientName")), ("Patient ID", _first(model, "PatientID")),
             ("Birth date", date(_first(model, "PatientBirthDate"))), ("Sex", _first(model, "PatientSex")),
             ("Study", _first(model, "StudyDescription")), ("Study date", date(_first(model, "StudyDate"))),
             ("Accession number", _first(model, "AccessionNumber")),
             ("Referring physician", _first(model, "ReferringPhysicianName")),
             ("Report date", " ".join(filter(None, (date(_first(model, "ContentDate")),
                                                    time(_first(model, "ContentTime")))))),
             ("Series", _first(model, "SeriesDescription")), ("Completion", _first(model, "CompletionFlag")),
             ("Verification", _first(model, "VerificationFlag")), ("Verified by", "; ".join(filter(None, observers))),
             ("Institution", _first(model, "InstitutionName")), ("Manufacturer", _first(model, "Manufacturer"))]
    return [(label, value) for label, value in facts if value]


def person(value: dict | str) -> str:
    """A PN value (its DICOM JSON groups, or the DICOM string) as people write it: prefix, given,
    middle, family, suffix; each group of a multi-script name kept."""
    groups = [value.get(name, "") for name in ("Alphabetic", "Ideographic", "Phonetic")] \
        if isinstance(value, dict) else str(value or "").split("=")
    written = []
    for group in groups:
        family, given, middle, prefix, suffix = (str(group or "").split("^") + [""] * 5)[:5]
        written.append(" ".join(part for part in (prefix, given, middle, family, suffix) if part))
    return " = ".join(g for g in written if g)


def date(value: str) -> str:
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def time(value: str) -> str:
    value = value.strip()
    if len(value) >= 4 and value[:4].isdigit():
        return ":".join(value[i:i + 2] for i in range(0, min(len(value.split(".")[0]), 6), 2))
    return value


def datetime(value: str) -> str:
    value = value.strip()
    return f"{date(value[:8])} {time(value[8:14])}".strip() if len(value) >= 8 else value


# -- layouts ---------------------------------------------------------------------------------

_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#111}"
          "table.header{border-collapse:collapse;margin-bottom:1.5em}"
          "table.header th{text-align:left;padding:.15em 1em .15em 0;color:#555;font-weight:normal}"
          "ul{list-style:none;padding-left:1.5em;margin:.2em 0}li{margin:.15em 0}"
          ".code{color:#777;font-size:.85em}.relationship{color:#777;font-style:italic;font-size:.85em}"
          ".concept{font-weight:bold}.value{white-space:pre-line}.left-out{color:#a00}")


def as_html(report: Report, charset: str = "utf-8") -> str:
    """An HTML5 page: the header as a table, containers as headings, other items as nested
    lists, each item's children inside it; every value escaped."""
    esc = html.escape
    out = [f'<!DOCTYPE html><html><head><meta charset="{esc(charset)}"><title>{esc(report.title)}</title>'
           f"<style>{_STYLE}</style></head><body><h1>{esc(report.title)}</h1>"]
    if report.header:
        out.append('<table class="header">')
        out.extend(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in report.header)
        out.append("</table>")
    depth = 0
    for item in report.items:
        if item.depth > depth:       # a child: its list opens inside the item before
            out.append("<ul>")
        else:                        # a sibling, or back up the tree
            out.append("</li>" + "</ul></li>" * (depth - item.depth))
        depth = item.depth
        relationship = RELATIONSHIPS.get(item.relationship, item.relationship.lower())
        label = f'<span class="relationship">{esc(relationship)}</span> ' if relationship else ""
        code = f' <span class="code">{esc(item.code)}</span>' if item.code else ""
        if item.value_type == "CONTAINER":
            level = min(6, item.depth + 1)
            out.append(f'<li id="item-{item.number}">{label}<h{level}>{esc(item.concept or "Section")}</h{level}>')
            continue
        value = f'<span class="value">{esc(item.value)}</span>' if item.value else ""
        if item.link:
            value = f'<a href="{esc(item.link, quote=True)}">{value}</a>'
        if item.value_code:
            value += f' <span class="code">{esc(item.value_code)}</span>'
        concept = f'<span class="concept">{esc(item.concept)}</span>{code}' if item.concept else ""
        joiner = ": " if concept and value else ""
        out.append(f'<li id="item-{item.number}">{label}{concept}{joiner}{value}')
    out.append("</li></ul>" * depth)
    if report.left_out:
        out.append(f'<p class="left-out">{report.left_out} more items are not shown.</p>')
    out.append("</body></html>")
    return "".join(out)


def _lines(report: Report) -> Iterator[tuple[int, str]]:
    """(indent, line) of the text layout, shared by text and PDF."""
    for item in report.items:
        relationship = RELATIONSHIPS.get(item.relationship, item.relationship.lower())
        prefix = f"[{relationship}] " if relationship else ""
        if item.value_type == "CONTAINER":
            yield item.depth - 1, prefix + (item.concept or "Section").upper()
            continue
        value = item.value + (f" {item.value_code}" if item.value_code else "")
        if item.link:
            value += f" <{item.link}>"
        concept = item.concept + (f" {item.code}" if item.code else "")
        yield item.depth - 1, prefix + (f"{concept}: {value}" if concept and value else concept or value)
    if report.left_out:
        yield 0, f"{report.left_out} more items are not shown."


def as_text(report: Report) -> str:
    out = [report.title, "=" * len(report.title)]
    width = max((len(label) for label, _ in report.header), default=0)
    out.extend(f"{label + ':':{width + 1}} {value}" for label, value in report.header)
    out.append("")
    for indent, line in _lines(report):   # a value's own lines are indented under it
        out.append("\n".join("  " * indent + ("  " if n else "") + part
                             for n, part in enumerate(line.splitlines() or [""])))
    return "\n".join(out) + "\n"


def as_pdf(report: Report) -> bytes:
    """A PDF of A4 pages: the header, then the tree indented (fpdf2, with DejaVu Sans for the
    whole of Unicode's Latin, Greek and Cyrillic; without that font, its Latin-1 core font)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(report.title)
    pdf.set_creator("dicomweb")
    pdf.set_auto_page_break(True, margin=15)
    unicode = PDF_FONT.is_file()
    if unicode:
        pdf.add_font("report", fname=str(PDF_FONT))
        family = "report"
    else:
        family = "helvetica"

    def clean(text: str) -> str:
        return text if unicode else text.encode("latin-1", "replace").decode("latin-1")

    pdf.add_page()
    pdf.set_font(family, size=15)
    pdf.multi_cell(0, 8, clean(report.title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font(family, size=9)
    for label, value in report.header:
        pdf.multi_cell(0, 5, clean(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(family, size=10)
    # Wrapped here and set as single cells: fpdf2's own line breaking measures the line so far
    # again for each character, which cost 0.9 s for a report of 500 items.
    average = pdf.get_string_width("abcdefghijklmnopqrstuvwxyz0123456789 ") / 37
    for indent, line in _lines(report):
        left = 5 * min(indent, 20)
        width = pdf.epw - left
        for n, part in enumerate(line.splitlines() or [""]):
            columns = max(10, int(width / average) - (2 if n else 0))
            pieces = textwrap.wrap(clean(part), columns) or [""]
            while columns > 10 and any(pdf.get_string_width(piece) > width for piece in pieces):   # wide glyphs
                columns = max(10, columns * 4 // 5)
                pieces = textwrap.wrap(clean(part), columns) or [""]
            for piece in pieces:
                pdf.set_x(pdf.l_margin + left + (4 if n else 0))
                pdf.cell(width, 5, piece, new_x="LMARGIN", new_y="NEXT")
    out = io.BytesIO()
    pdf.output(out)
    return out.getvalue()
