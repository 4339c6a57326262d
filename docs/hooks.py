"""mkdocs hook: the command reference, generated from the parsers at build time (so it cannot drift).

A page holding the line ``<!-- deepyeast:commands -->`` gets, in its place, one section per
subcommand of ``deepyeast`` (:mod:`deepyeast.commands`: the registry the command itself uses),
each with its one-line description, usage, a table of its options (flags, value, default, meaning)
and the rest of its documentation.  ``<!-- deepyeast:exit-codes -->`` becomes the table of exit
codes (:data:`deepyeast.launcher.EXIT_CODES`).  Run by ``mkdocs build`` (``hooks:`` in mkdocs.yml).
"""

import argparse
import html
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the checkout's deepyeast, also when it is not installed
    sys.path.insert(0, ROOT)

COMMANDS = "<!-- deepyeast:commands -->"
EXIT_CODES = "<!-- deepyeast:exit-codes -->"


def _cell(text):
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def _value(action):
    if action.nargs == 0:
        return ""
    if action.choices:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return f"`{metavar}`" + (" …" if action.nargs in ("+", "*") else "")


MACHINE_DEFAULTS = {"jobs": "every CPU"}
"""Options whose default depends on the machine that builds the site: what the page says instead."""


def _default(action):
    if action.dest in MACHINE_DEFAULTS:
        return MACHINE_DEFAULTS[action.dest]
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return "required" if action.required else ""
    if isinstance(action.default, (list, tuple)):
        return "`" + " ".join(map(str, action.default)) + "`"
    return f"`{action.default}`"


def _help(action, parser):
    text = action.help or ""
    if action.dest in MACHINE_DEFAULTS:  # "(default: every CPU, %(default)s here)": no machine's count on the page
        text = re.sub(r",? *%\(default\)s here", "", text)
    if "%(" in text:
        values = dict(vars(action), prog=parser.prog)
        values["default"] = MACHINE_DEFAULTS.get(action.dest, action.default)
        try:
            text = text % values
        except (KeyError, TypeError, ValueError):
            pass
    return _cell(text)


def command_section(name):
    """Markdown of one subcommand: heading, description, usage, options table, the rest of its doc."""
    from deepyeast.commands import build_parser, summary

    parser = build_parser(name)
    parser.formatter_class = lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100)
    out = [f"## `deepyeast {name}`", "", f"{summary(name)}.", "", "```text", parser.format_usage().strip(), "```", ""]
    groups = [(g.title, [a for a in g._group_actions if a.help != argparse.SUPPRESS]) for g in parser._action_groups]
    for title, actions in groups:
        if not actions:
            continue
        out += [f"**{title}**", "", "| option | value | default | meaning |", "|---|---|---|---|"]
        for a in actions:
            flags = ", ".join(f"`{f}`" for f in a.option_strings) or f"`{a.metavar or a.dest}`"
            out.append(f"| {flags} | {_value(a)} | {_default(a)} | {_help(a, parser)} |")
        out.append("")
    if parser.epilog or (parser.description and parser.description.strip() != summary(name) + "."):
        body = "\n\n".join(x for x in (parser.description, parser.epilog) if x)
        out += ["??? note \"Full documentation\"", "", "    ```text"]
        out += ["    " + line if line else "" for line in body.splitlines()]
        out += ["    ```", ""]
    return "\n".join(out)


def commands_markdown():
    """Every subcommand's section, in ``deepyeast --help``'s order."""
    from deepyeast.commands import names

    return "\n".join(command_section(name) for name in names())


def exit_codes_markdown():
    from deepyeast.launcher import EXIT_CODES

    return "\n".join(["| code | meaning |", "|---|---|"] + [f"| {c} | {_cell(t)} |" for c, t in EXIT_CODES.items()])


def on_page_markdown(markdown, page, config, files, **kwargs):
    """mkdocs event: fill the generated parts of a page."""
    if COMMANDS in markdown:
        markdown = markdown.replace(COMMANDS, commands_markdown())
    if EXIT_CODES in markdown:
        markdown = markdown.replace(EXIT_CODES, exit_codes_markdown())
    return markdown
