"""{{ cookiecutter.project_name }}.
{%- if cookiecutter.description %}

{{ cookiecutter.description | wordwrap(96, break_long_words=False) }}
{% endif %}"""
{%- if cookiecutter.with_pydantic %}

import logfire

# Logfire's Pydantic plugin decides whether to record a model when the class is created, so this
# must run before any model of this package is defined. Only failed validations are recorded:
# recording every validation would add a span to every request.
# `include` patterns are regular expressions matched against "module::Model".
logfire.instrument_pydantic(record="failure", include={rf"{__name__}\..*"})
{%- endif %}

__version__ = "0.1.0"
