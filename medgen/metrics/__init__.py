"""medgen.metrics"""
