"""Live enforcement over the Asterisk Manager Interface.

``protocol`` (sans-IO framing), ``client`` (the connection), ``tracker`` (listen/whisper sessions
and the grants that allowed them), ``enforcer`` (hang up what a policy change withdraws),
``service`` (the component ``daemon.py`` starts).
"""
