"""The review console: server-rendered pages (Jinja2, autoescaped) and one static script,
served by the API app under ``/console``. The pages carry no data of their own: the script
calls the public ``/v1`` endpoints with the session cookie (`producers.http.sessions`),
building every element with ``textContent`` (never HTML from data), so every user string
is inert. Every response carries a strict CSP: scripts, styles, images and media from this
origin only, no inline script, no framing.
"""
