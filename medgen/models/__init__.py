"""medgen.models"""
