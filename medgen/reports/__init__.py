"""medgen.reports: the report writer (phrasing families, EN and ZH) that turns `Findings` into report text for
training and evaluation, and the rule parser that reads its phrasing back.

    from medgen.reports.writer import write_report
    from medgen.reports.rule_parser import parse_report, implied_density
"""
