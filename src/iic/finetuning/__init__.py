"""Semi-supervised IIC: a classifier fine-tuned with few labels on the trunk of an IIC clustering run."""
