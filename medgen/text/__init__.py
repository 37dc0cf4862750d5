"""medgen.text"""
