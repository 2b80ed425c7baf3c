"""Everything that explains a prediction or a channel through the gradient model
(saliency, Grad-CAM, feature visualisation, the backward graph), and occlusion."""
