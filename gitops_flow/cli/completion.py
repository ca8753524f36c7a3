"""Shell completion scripts for bash, zsh and fish, made from the command line's argparse parser: its subcommands,
each one's flags and the choices of a flag that has them. Nothing is run at completion time but the shell itself."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand as completion sees it: its name, its help, its flags, and the choices of the flags that have
    them."""

    name: str
    help: str
    flags: tuple[str, ...]
    choices: dict[str, tuple[str, ...]]
    words: tuple[str, ...] = ()  # the choices of its positional arguments (`completion bash`)


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """The subcommands of ``parser`` in the order they were added."""
    found: list[Command] = []
    for action in parser._actions:  # argparse has no public way to list subparsers
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
            choices = {
                o: tuple(str(c) for c in a.choices)
                for a in sub._actions
                if a.choices is not None and a.option_strings
                for o in a.option_strings
            }
            words = tuple(
                str(c) for a in sub._actions if a.choices is not None and not a.option_strings for c in a.choices
            )
            found.append(Command(name, helps.get(name, ""), tuple(flags), choices, words))
    return found


def script(shell: str, parser: argparse.ArgumentParser, prog: str = "gitops-flow") -> str:
    """The completion script of ``shell`` (one of SHELLS) for ``parser``."""
    found = commands(parser)
    if shell == "fish":
        return _fish(found, prog)
    body = _bash(found, prog)
    if shell == "zsh":  # zsh runs bash's completion functions through bashcompinit
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


def _bash(found: list[Command], prog: str) -> str:
    function = "_" + prog.replace("-", "_")
    names = " ".join(c.name for c in found)
    lines = [
        f'# {prog} completion for bash (and zsh): eval "$({prog} completion bash)"',
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" command="" word',
        '    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
        '        case "$word" in -*) ;; *) command="$word"; break ;; esac',
        "    done",
        '    if [ -z "$command" ]; then',
        f'        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))',
        "        return",
        "    fi",
        '    case "$command" in',
    ]
    for command in found:
        lines.append(f"        {command.name})")
        if command.choices:
            lines.append('            case "$prev" in')
            for flag, values in command.choices.items():
                words = shlex.quote(" ".join(values))
                lines.append(f'                {flag}) COMPREPLY=($(compgen -W {words} -- "$cur")); return ;;')
            lines.append("            esac")
        flags = " ".join(command.flags)
        # a word that starts with - is a flag; another is one of the command's words, else a file or folder
        otherwise = f'compgen -W "{" ".join(command.words)}" -- "$cur"' if command.words else 'compgen -f -- "$cur"'
        lines.append(f'            if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "{flags}" -- "$cur"))')
        lines.append(f"            else COMPREPLY=($({otherwise})); fi")
        lines.append("            ;;")
    lines += ["    esac", "}", f"complete -o filenames -F {function} {prog}", ""]
    return "\n".join(lines)


def _fish(found: list[Command], prog: str) -> str:
    names = " ".join(c.name for c in found)
    lines = [f"# {prog} completion for fish: {prog} completion fish | source"]
    for command in found:
        lines.append(
            f"complete -c {prog} -n 'not __fish_seen_subcommand_from {names}' -a {command.name}"
            f" -d {shlex.quote(command.help)}"
        )
    for command in found:
        for flag in command.flags:
            values = command.choices.get(flag)
            extra = f" -r -a {shlex.quote(' '.join(values))}" if values else ""
            lines.append(f"complete -c {prog} -n '__fish_seen_subcommand_from {command.name}' -l {flag[2:]}{extra}")
    return "\n".join(lines) + "\n"
