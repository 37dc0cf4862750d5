"""medgen.preview"""
