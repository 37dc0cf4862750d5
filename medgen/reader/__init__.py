"""Report reader: free-text EN/ZH chest CT report -> typed `Findings` (a text encoder with a token-tagging head,
combined with ConText rules and a size and site grammar; `medgen.reader.model`, `medgen.reader.grammar`).

    from medgen.reader import ReportReader
    reader = ReportReader.from_pretrained("medgen/assets/default-model/reader")
    result = reader.read("RUL: 12 mm solid nodule. No effusion.")
    result.findings.to_json(), result.warnings
"""

from medgen.reader.model import ReaderWarning, ReadResult, ReportReader

__all__ = ["ReadResult", "ReaderWarning", "ReportReader"]
