"""The web dashboard, served under /ui by the HTTP API's server (`orchestrator.ops.http`).

Server-rendered pages (Jinja2 templates in `templates/`, a stylesheet and a small script in
`static/`) over the same functions the `saga` CLI and the JSON API use: `SagaQuery` for reads,
`intervene` for saga actions, `dlq` for dead letters. The same tokens and roles as the API
(`session`); the routes and their guard (`app`); what handlers get (`context`); pages
(`pages`); actions (`actions`); the figures only the dashboard shows (`reads`); templates
(`render`).
"""

from orchestrator.ops.ui.app import Dashboard

__all__ = ["Dashboard"]
