"""medgen.pipelines"""
