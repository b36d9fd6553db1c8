"""Face restoration: degradation model, generic baselines and exemplar-based restoration.

``degrade`` is the forward model (blur, area downscale, noise, JPEG) used both to
make experiment inputs and to check a restored face's data consistency;
``generic`` holds the non-personal baselines (bicubic, Real-ESRGAN x4plus on the
CPU through ncnn).
"""
