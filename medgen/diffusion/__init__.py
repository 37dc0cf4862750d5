"""medgen.diffusion"""
