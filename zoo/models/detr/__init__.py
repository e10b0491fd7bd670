"""DETR (Carion et al., 2020): a ResNet, a post-norm transformer encoder-decoder over
the C5 map and N learned object queries, trained with a softmax no-object class."""
