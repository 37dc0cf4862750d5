"""medgen.io"""
