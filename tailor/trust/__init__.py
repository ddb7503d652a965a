"""Signature policy at staging: containers-policy.json and registries.d, evaluated as
containers/image (podman, skopeo, CRI-O) evaluates them, before anything is published.

- :mod:`tailor.trust.policy`: the policy file, strictly parsed; which scope's
  requirements apply to an image reference;
- :mod:`tailor.trust.identity`: ``signedIdentity``, the rules that say which signed
  references an image's reference accepts;
- :mod:`tailor.trust.openpgp`: ASCII armour and the primary-key fingerprints of a keyring;
- :mod:`tailor.trust.simplesign`: a simple-signing signature: its blob, its payload, and
  its verification by Debian's ``gpgv`` against the policy's keys only;
- :mod:`tailor.trust.lookaside`: registries.d and the lookaside storage it names, where
  the signatures of an image are read;
- :mod:`tailor.trust.sigstore`: cosign-format signatures under ``sha256-HEX.sig``, for
  ``sigstoreSigned``;
- :mod:`tailor.trust.evaluate`: the verdict for one image manifest;
- :mod:`tailor.trust.source`: one source repository's evaluator (lookaside and tags);
- :mod:`tailor.trust.served`: the policy document the broker serves at redemption.
"""
