"""SRGAN parts used by iSeeBetter: the discriminator (``model.Discriminator``) and the losses (``loss``)."""
