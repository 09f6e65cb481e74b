"""Networks: the stage-1 3D ResNet autoencoder, MONAI U-Net builders and latent scaling."""
