"""Build of the C extensions; everything else is in pyproject.toml.

``gateway.crypto._hmac256`` computes the credential digests of the verify hot path with
OpenSSL's SHA-256 (see the file's header). It is optional: where it cannot be built (no C
compiler or no OpenSSL headers), ``gateway.crypto.digests`` computes the same digests in
Python, more slowly.

``gateway.cache._untrack`` takes L1's tuples out of the garbage collector's sight when they
are put (see the file's header); without it they are untracked by the collector itself, a
few full collections later, and those collections take longer.

``gateway.cache._plain`` answers a batchVerify's cached keys from L1 in one call (see the
file's header); without it ``gateway.cache.entry.plain_answers`` does the same in Python.

``gateway.crypto._merge`` merges and sorts the imported keys' digests in a thread, without
the GIL (see the file's header); without it they are merged on the event loop in slices.
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
        Extension(
            "gateway.cache._untrack",
            sources=["gateway/cache/_untrack.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "gateway.crypto._merge",
            sources=["gateway/crypto/_merge.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "gateway.cache._plain",
            sources=["gateway/cache/_plain.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ],
)
