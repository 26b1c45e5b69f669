"""MCP prompts loaded from the Markdown files in `prompts/`.

Each file starts with a small front-matter block (description and arguments) followed by
the template text. `{name}` is replaced by an argument; `{project_clause}` and
`{project_arg}` read naturally whether or not a project was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.prompts.base import Message, Prompt, PromptArgument
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, InputRequiredResult

from mcp_taskqueue.data_files import shipped_dir

PROMPTS_DIR = shipped_dir("prompts")


@dataclass
class PromptFile:
    name: str
    description: str
    arguments: list[PromptArgument] = field(default_factory=list)
    template: str = ""

    def render(self, **values: Any) -> str:
        given = {k: str(v) for k, v in values.items() if v not in (None, "")}
        project = given.get("project")
        given.setdefault("project_clause", f" (project `{project}`)" if project else "")
        given.setdefault("project_arg", f', project="{project}"' if project else "")
        return re.sub(r"\{(\w+)\}", lambda m: given.get(m[1], m[0]), self.template)


def parse_prompt_file(path: Path) -> PromptFile:
    """Read the front matter (description, arguments with name/description/required) and body."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    if match is None:
        raise ValueError(f"{path}: a prompt file starts with a '---' front-matter block")
    header, body = match.groups()
    prompt = PromptFile(name=path.stem, description="", template=body.strip() + "\n")
    current: dict[str, Any] | None = None
    for line in header.splitlines():
        if line.startswith("description:"):
            prompt.description = line.split(":", 1)[1].strip()
        elif line.strip().startswith("- name:"):
            current = {"name": line.split(":", 1)[1].strip()}
            prompt.arguments.append(PromptArgument(name=current["name"]))
        elif current is not None and ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            arg = prompt.arguments[-1]
            if key == "description":
                arg.description = value
            elif key == "required":
                arg.required = value.lower() == "true"
    return prompt


def load_prompts(directory: Path = PROMPTS_DIR) -> list[PromptFile]:
    return [parse_prompt_file(path) for path in sorted(directory.glob("*.md"))]


class FilePrompt(Prompt):
    """A prompt whose missing arguments are an invalid-params error naming them, not a server error."""

    async def render(self, arguments: dict[str, Any] | None, context: Any) -> list[Message] | InputRequiredResult:
        given = arguments or {}
        missing = [a.name for a in self.arguments or [] if a.required and not given.get(a.name)]
        if missing:
            raise MCPError(INVALID_PARAMS, f"prompt {self.name!r} needs the argument(s): {', '.join(missing)}")
        unknown = sorted(set(given) - {a.name for a in self.arguments or []})
        if unknown:
            raise MCPError(INVALID_PARAMS, f"prompt {self.name!r} has no argument(s): {', '.join(unknown)}")
        return await super().render(given, context)


def register_prompts(mcp: MCPServer, directory: Path = PROMPTS_DIR) -> None:
    for prompt_file in load_prompts(directory):
        mcp.add_prompt(
            FilePrompt(
                name=prompt_file.name,
                description=prompt_file.description,
                arguments=prompt_file.arguments,
                fn=prompt_file.render,
            )
        )
