"""Default weights of the four generator-loss terms (torch-free, so command-line parsers can use them cheaply).

``total = image * MSE + adversarial * (-mean D(G(z))) + perception * VGG-MSE + tv * TV``; these are the original
iSeeBetter values.
"""

DEFAULT_WEIGHTS = {"image": 1.0, "adversarial": 1e-3, "perception": 6e-3, "tv": 2e-8}
