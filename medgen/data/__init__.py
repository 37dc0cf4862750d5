"""medgen.data"""
