"""hqcbench: do hybrid quantum-classical image classifiers beat comparable classical CNNs?"""
__version__ = "0.1.0"
