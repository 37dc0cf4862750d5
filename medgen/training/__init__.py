"""medgen.training"""
