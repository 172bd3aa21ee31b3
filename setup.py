"""Build of the one C extension; everything else is in pyproject.toml.

``gateway.crypto._hmac256`` computes the credential digests of the verify hot path with
OpenSSL's SHA-256 (see the file's header). It is optional: where it cannot be built (no C
compiler or no OpenSSL headers), ``gateway.crypto.digests`` computes the same digests in
Python, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.crypto._hmac256",
            sources=["gateway/crypto/_hmac256.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ],
)
