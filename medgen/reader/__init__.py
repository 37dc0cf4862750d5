"""Report reader: free-text EN/ZH chest CT report -> typed `Findings` (text encoder + token-tagging head).

    from medgen.reader import ReportReader
    reader = ReportReader.from_pretrained("medgen/assets/default-model/reader")
    result = reader.read("RUL: 12 mm solid nodule. No effusion.")
    result.findings.to_json(), result.warnings
"""

from medgen.reader.model import ReaderWarning, ReadResult, ReportReader

__all__ = ["ReadResult", "ReaderWarning", "ReportReader"]
