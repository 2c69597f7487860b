"""SRGAN parts used by iSeeBetter: the discriminator (``model.Discriminator``), the losses (``loss``) and the losses'
default weights (``weights``, torch-free)."""
