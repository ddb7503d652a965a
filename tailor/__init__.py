"""The Tailor: a registry client and the staging program that copies images.

Layers, bottom up: ``reference`` (names), ``authn`` (authenticators), ``challenge``,
``bearer`` and ``transport`` (HTTP to one registry), ``registry`` (the OCI
Distribution API), ``blobstream`` (verified streaming), ``copy`` (the copy loop),
``cli`` (the ``tailor`` command). It never imports ``broker``.
"""

__version__ = "0.1.0"
