"""Phone replace (hot-desking): a phone takes over a colleague's extension with that extension's
PIN, and goes back with ``restore``.

- ``pins``: the PIN format and its scrypt hash;
- ``lockout``: when wrong PINs lock a target or a phone out (pure rules);
- ``service``: the replace/restore flow over the store, the audit and AstDB, and the revocation
  of replacements that a policy change no longer allows;
- ``agi_flow``: the FastAGI handlers that drive the flow inside one AGI session.
"""
