"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Why hand-written: the Markdown and the HTML must carry exactly the same numbers (a test compares
them), so both are rendered from one block list rather than converting one into the other; a
Markdown->HTML converter would add a dependency and its own dialect, and the block set needed here
(headings, paragraphs, lists, tables, images, code) is a few lines per format.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Inline = Union[str, Link, "Anchor", list]  # a list concatenates its parts


@dataclass(frozen=True)
class Anchor:
    """A link target (id) placed before an inline."""

    anchor_id: str
    content: Inline


@dataclass
class Block:
    kind: str  # h1 h2 h3 p ul table img code summary
    content: Inline = ""  # ul: the list of items; table: unused
    header: Sequence[Inline] = field(default_factory=list)
    rows: Sequence[Sequence[Inline]] = field(default_factory=list)
    alt: str = ""
    table_id: str = ""


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_inline(item: Inline) -> str:
    if isinstance(item, list):
        return "".join(md_inline(part) for part in item)
    if isinstance(item, Link):
        return f"[{_md_escape(item.text)}]({item.href})"
    if isinstance(item, Anchor):
        return f'<a id="{item.anchor_id}"></a>{md_inline(item.content)}'
    return _md_escape(str(item))


def html_inline(item: Inline) -> str:
    if isinstance(item, list):
        return "".join(html_inline(part) for part in item)
    if isinstance(item, Link):
        return f'<a href="{html.escape(item.href, quote=True)}">{html.escape(item.text)}</a>'
    if isinstance(item, Anchor):
        return f'<span id="{html.escape(item.anchor_id)}"></span>{html_inline(item.content)}'
    return html.escape(str(item))


def plain_inline(item: Inline) -> str:
    """The visible text (what a reader sees in either rendering)."""
    if isinstance(item, list):
        return "".join(plain_inline(part) for part in item)
    if isinstance(item, Link):
        return item.text
    if isinstance(item, Anchor):
        return plain_inline(item.content)
    return str(item)


class Document:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[Block] = [Block("h1", title)]

    def h2(self, text: str) -> None:
        self.blocks.append(Block("h2", text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def p(self, *parts: Inline) -> None:
        self.blocks.append(Block("p", list(parts)))

    def ul(self, items: list[Inline]) -> None:
        self.blocks.append(Block("ul", items))

    def code(self, text: str) -> None:
        self.blocks.append(Block("code", text))

    def table(self, header: Sequence[Inline], rows: Sequence[Sequence[Inline]], table_id: str = "") -> None:
        self.blocks.append(Block("table", header=header, rows=rows, table_id=table_id))

    def img(self, file_name: str, alt: str) -> None:
        self.blocks.append(Block("img", file_name, alt=alt))

    def summary(self, items: Sequence[Inline], file_name: str = "", alt: str = "") -> None:
        """A list with a figure beside it: in Markdown the list then the image; in HTML side by side, so a
        first screen shows both (the report's bottom line and its forest plot)."""
        self.blocks.append(Block("summary", file_name, rows=[[i] for i in items], alt=alt))

    # ------------------------------------------------------------------ Markdown
    def to_markdown(self) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.kind in ("h1", "h2", "h3"):
                out.append("#" * int(b.kind[1]) + " " + str(b.content))
            elif b.kind == "p":
                out.append(md_inline(b.content))
            elif b.kind == "ul":
                assert isinstance(b.content, list)  # Document.ul stores its list of items
                out.append("\n".join("- " + md_inline(i) for i in b.content))
            elif b.kind == "code":
                out.append("```\n" + str(b.content) + "\n```")
            elif b.kind == "img":
                out.append(f"![{b.alt}]({b.content})")
            elif b.kind == "summary":
                out.append("\n".join("- " + md_inline(row[0]) for row in b.rows))
                if b.content:
                    out.append(f"![{b.alt}]({b.content})")
            elif b.kind == "table":
                head = "| " + " | ".join(md_inline(h) for h in b.header) + " |"
                rule = "|" + "|".join("---" for _ in b.header) + "|"
                body = ["| " + " | ".join(md_inline(c).replace("\n", " ") for c in row) + " |" for row in b.rows]
                out.append("\n".join([head, rule, *body]))
        return hide_loopback("\n\n".join(out) + "\n")

    # ------------------------------------------------------------------ HTML
    def to_html(self, image_dir: Path) -> str:
        """One file: CSS inline, every PNG embedded as base64 (read from ``image_dir``)."""
        parts: list[str] = []
        for b in self.blocks:
            if b.kind in ("h1", "h2", "h3"):
                parts.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
            elif b.kind == "p":
                parts.append(f"<p>{html_inline(b.content)}</p>")
            elif b.kind == "ul":
                assert isinstance(b.content, list)  # Document.ul stores its list of items
                parts.append("<ul>" + "".join(f"<li>{html_inline(i)}</li>" for i in b.content) + "</ul>")
            elif b.kind == "code":
                parts.append(f"<pre><code>{html.escape(str(b.content))}</code></pre>")
            elif b.kind == "img":
                parts.append(_figure(image_dir, str(b.content), b.alt))
            elif b.kind == "summary":
                items = "<ul>" + "".join(f"<li>{html_inline(row[0])}</li>" for row in b.rows) + "</ul>"
                figure = _figure(image_dir, str(b.content), b.alt) if b.content else ""
                parts.append(f'<div class="summary"><div class="summary-text">{items}</div>{figure}</div>')
            elif b.kind == "table":
                ident = f' id="{html.escape(b.table_id)}"' if b.table_id else ""
                head = "".join(f"<th>{html_inline(h)}</th>" for h in b.header)
                body = "".join("<tr>" + "".join(f"<td>{html_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                parts.append(f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
                             f"<tbody>{body}</tbody></table></div>")
        return hide_loopback(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                             f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
                             + "\n".join(parts) + "\n</body></html>\n")


# A URL on a loopback host is the reader's own machine, not the one that held the runs: a committed report
# never prints one (a command that named one, e.g. --ui_url of a local server, shows the placeholder).
LOOPBACK_URL = re.compile(r"\b(?:https?://)?(?:localhost|127(?:\.\d{1,3}){3}|0\.0\.0\.0|\[::1\])(?::\d+)?(?:/[^\s)`'\"<|]*)?")
LOOPBACK_PLACEHOLDER = "(a loopback address)"


def hide_loopback(text: str) -> str:
    return LOOPBACK_URL.sub(LOOPBACK_PLACEHOLDER, text)


def _figure(image_dir: Path, file_name: str, alt: str) -> str:
    data = base64.b64encode((image_dir / file_name).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.7rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #ccc;padding:.25rem .45rem;vertical-align:top;text-align:left}
th{background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}
.scroll{overflow-x:auto}a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:.85rem;color:#555}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}
.summary{display:flex;gap:1.5rem;align-items:flex-start}.summary-text{flex:1 1 50%;font-size:.92rem}
.summary figure{flex:1 1 50%;margin:0}.summary li{margin-bottom:.45rem}
@media (max-width:900px){.summary{display:block}}
"""
