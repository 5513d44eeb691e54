"""A small renderer for the subset of Go's text/template that Ollama templates use, and
Ollama's way of feeding it a chat (server/routes.go and template/template.go).

Supported: text, {{ pipeline }}, {{- -}} trimming, if / else if / else / end, range (plain
and `$i, $m :=`), variable declaration (:=) and assignment (=), fields (.X, $.X, $m.X),
string literals with Go escapes, integers, true/false, parentheses, and the functions eq,
ne, and, or, not, len and slice. Anything else raises GoTemplateError, so a template that
needs a construct this file does not know fails its test instead of passing silently.
"""

from __future__ import annotations

import re


class GoTemplateError(Exception):
    pass


# ---- lexing -------------------------------------------------------------------------------


def _split(src: str):
    """[("text", s) | ("action", body)] with the trim markers applied to the text."""
    parts, pos = [], 0
    while True:
        start = src.find("{{", pos)
        if start < 0:
            parts.append(["text", src[pos:]])
            break
        parts.append(["text", src[pos:start]])
        i = start + 2
        trim_left = src[i : i + 1] == "-" and src[i + 1 : i + 2] in (" ", "\t", "\r", "\n")
        if trim_left:
            i += 1
        j = i
        while True:  # find the closing }} outside string literals
            if j >= len(src):
                raise GoTemplateError("unclosed action")
            ch = src[j]
            if ch == '"':
                j += 1
                while j < len(src) and src[j] != '"':
                    if src[j] == "\n":
                        raise GoTemplateError("newline in string literal")
                    j += 2 if src[j] == "\\" else 1
                j += 1
                continue
            if ch in "`'":
                raise GoTemplateError(f"{ch} literals are not supported")
            if src.startswith("}}", j):
                break
            j += 1
        body = src[i:j]
        if body.strip().startswith("/*"):
            raise GoTemplateError("comments are not supported")
        trim_right = len(body) >= 2 and body[-1] == "-" and body[-2] in " \t\r\n"
        if trim_right:
            body = body[:-1]
        if trim_left:
            parts[-1][1] = parts[-1][1].rstrip(" \t\r\n")
        parts.append(["action", body, trim_right])
        pos = j + 2
        if trim_right:
            k = pos
            while k < len(src) and src[k] in " \t\r\n":
                k += 1
            pos = k
    return [(p[0], p[1]) for p in parts if p[0] == "action" or p[1]]


_TOKEN = re.compile(
    r"""\s+
    | (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<num>\d+)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<op>:=|=|,|\(|\))
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unquote(lit: str) -> str:
    out, i, body = [], 0, lit[1:-1]
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in '\\"':
            out.append(e)
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2 : i + 2 + n]
            if not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", digits):
                raise GoTemplateError(f"bad escape in {lit}")
            code = int(digits, 16)
            if e == "x":
                raise GoTemplateError("\\x byte escapes are not supported")
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise GoTemplateError(f"invalid code point in {lit}")
            out.append(chr(code))
            i += 2 + n
        else:
            raise GoTemplateError(f"unknown escape \\{e} in {lit}")
    return "".join(out)


def _tokens(body: str):
    out, pos = [], 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            raise GoTemplateError(f"cannot read {body[pos:]!r}")
        pos = m.end()
        if m.lastgroup:
            out.append((m.lastgroup, m.group(m.lastgroup)))
    return out


# ---- parsing ------------------------------------------------------------------------------

FUNCS = {"eq", "ne", "and", "or", "not", "len", "slice"}
UNSUPPORTED = {"with", "define", "template", "block", "break", "continue", "nil"}


def _parse_command(toks):
    """A command: a function call or one operand. Returns (node, rest)."""
    args, rest = [], list(toks)
    while rest and rest[0] != ("op", ")"):
        kind, val = rest.pop(0)
        if kind == "op" and val == "(":
            depth, inner = 1, []
            while depth:
                if not rest:
                    raise GoTemplateError("unbalanced (")
                tok = rest.pop(0)
                depth += {("op", "("): 1, ("op", ")"): -1}.get(tok, 0)
                if depth:
                    inner.append(tok)
            node, left = _parse_command(inner)
            if left:
                raise GoTemplateError("unexpected tokens in ( )")
            args.append(node)
        elif kind == "op":
            raise GoTemplateError(f"unexpected {val!r}")
        elif kind == "ident":
            if val in UNSUPPORTED or (val not in FUNCS and val not in ("true", "false")):
                raise GoTemplateError(f"unsupported identifier {val!r}")
            args.append(("bool", val == "true") if val in ("true", "false") else ("func", val))
        elif kind == "str":
            args.append(("const", _unquote(val)))
        elif kind == "num":
            args.append(("const", int(val)))
        else:
            args.append((kind, val))
    if not args:
        raise GoTemplateError("empty command")
    if args[0][0] == "func":
        if any(a[0] == "func" for a in args[1:]):
            raise GoTemplateError("a function used as an argument needs parentheses")
        return ("call", args[0][1], args[1:]), rest
    if len(args) > 1 or args[0][0] == "func":
        raise GoTemplateError("only a function can take arguments")
    return args[0], rest


def _parse_pipeline(toks):
    node, rest = _parse_command(toks)
    if rest:
        raise GoTemplateError(f"unexpected {rest}")
    return node


def parse(src: str):
    items = _split(src)
    pos = 0

    def block(stop):
        nonlocal pos
        nodes = []
        while pos < len(items):
            kind, body = items[pos]
            pos += 1
            if kind == "text":
                nodes.append(("text", body))
                continue
            toks = _tokens(body)
            if not toks:
                raise GoTemplateError("empty action")
            head = toks[0]
            if head in (("ident", "end"), ("ident", "else")):
                if head[1] not in stop:
                    raise GoTemplateError(f"unexpected {{{{ {body.strip()} }}}}")
                return nodes, toks
            if head == ("ident", "if"):
                nodes.append(if_node(toks[1:]))
            elif head == ("ident", "range"):
                nodes.append(range_node(toks[1:]))
            elif len(toks) >= 2 and toks[0][0] == "var" and toks[1] in (("op", ":="), ("op", "=")):
                if "." in toks[0][1]:
                    raise GoTemplateError("cannot assign to a field")
                op = "decl" if toks[1][1] == ":=" else "assign"
                nodes.append((op, toks[0][1], _parse_pipeline(toks[2:])))
            else:
                nodes.append(("print", _parse_pipeline(toks)))
        if stop:
            raise GoTemplateError("missing {{ end }}")
        return nodes, None

    def if_node(cond_toks):
        branches = []
        cond = _parse_pipeline(cond_toks)
        while True:
            body, closing = block({"end", "else"})
            branches.append((cond, body))
            if closing == [("ident", "end")]:
                return ("if", branches, [])
            if closing[0] == ("ident", "end"):
                raise GoTemplateError("junk after end")
            if closing[1:2] == [("ident", "if")]:
                cond = _parse_pipeline(closing[2:])
                continue
            if len(closing) != 1:
                raise GoTemplateError("unsupported else form")
            other, closing = block({"end"})
            if closing != [("ident", "end")]:
                raise GoTemplateError("else must end with {{ end }}")
            return ("if", branches, other)

    def range_node(toks):
        names = []
        if ("op", ":=") in toks:
            split = toks.index(("op", ":="))
            decl = toks[:split]
            if len(decl) == 3 and decl[0][0] == decl[2][0] == "var" and decl[1] == ("op", ","):
                names = [decl[0][1], decl[2][1]]
            else:
                raise GoTemplateError("range supports only `$i, $m := ...`")
            toks = toks[split + 1 :]
        pipe = _parse_pipeline(toks)
        body, closing = block({"end", "else"})
        other = []
        if closing[0] == ("ident", "else"):
            if len(closing) != 1:
                raise GoTemplateError("unsupported else form in range")
            other, closing = block({"end"})
        if closing != [("ident", "end")]:
            raise GoTemplateError("range must end with {{ end }}")
        return ("range", names, pipe, body, other)

    nodes, _ = block(set())
    return nodes


# ---- execution ----------------------------------------------------------------------------


def truth(v) -> bool:
    if v is None or isinstance(v, (bool, int, str, list, dict)):
        return bool(v)
    raise GoTemplateError(f"no truth value for {type(v).__name__}")


class _Run:
    def __init__(self, data):
        self.scopes = [{"$": data}]
        self.out = []

    def lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise GoTemplateError(f"undefined variable {name}")

    def fields(self, value, path):
        for name in [p for p in path.split(".") if p]:
            if not isinstance(value, dict) or name not in value:
                raise GoTemplateError(f"no field {name} in {type(value).__name__}")
            value = value[name]
        return value

    def eval(self, node, dot):
        kind = node[0]
        if kind in ("const", "bool"):
            return node[1]
        if kind == "field":
            return dot if node[1] == "." else self.fields(dot, node[1])
        if kind == "var":
            name, _, path = node[1].partition(".")
            return self.fields(self.lookup(name), path)
        if kind == "call":
            return self.call(node[1], node[2], dot)
        raise GoTemplateError(f"cannot evaluate {node}")

    def call(self, name, args, dot):
        if name in ("and", "or"):  # evaluated lazily and returning an argument, as Go does
            if not args:
                raise GoTemplateError(f"{name} needs arguments")
            for arg in args:
                value = self.eval(arg, dot)
                if truth(value) == (name == "or"):
                    return value
            return value
        values = [self.eval(a, dot) for a in args]
        if name == "not":
            if len(values) != 1:
                raise GoTemplateError("not takes one argument")
            return not truth(values[0])
        if name in ("eq", "ne"):
            if len(values) < 2 or (name == "ne" and len(values) != 2):
                raise GoTemplateError(f"wrong number of arguments to {name}")
            for v in values:
                if not isinstance(v, (bool, int, str)) or type(v) is not type(values[0]):
                    raise GoTemplateError(f"incompatible types for comparison: {values}")
            hit = any(values[0] == v for v in values[1:])
            return hit if name == "eq" else not hit
        if name == "len":
            if len(values) != 1 or not isinstance(values[0], (list, str, dict)):
                raise GoTemplateError("len of an unsupported value")
            v = values[0]
            return len(v.encode()) if isinstance(v, str) else len(v)
        if name == "slice":
            if len(values) not in (2, 3) or not isinstance(values[0], list):
                raise GoTemplateError("slice supports a list and one or two indexes")
            idx = values[1:]
            if any(type(i) is not int for i in idx):
                raise GoTemplateError("slice indexes must be integers")
            end = idx[1] if len(idx) == 2 else len(values[0])
            if not 0 <= idx[0] <= end <= len(values[0]):
                raise GoTemplateError("slice index out of range")
            return values[0][idx[0] : end]
        raise GoTemplateError(f"unknown function {name}")

    def show(self, value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, str)):
            return str(value)
        raise GoTemplateError(f"cannot print {value!r}")

    def run(self, nodes, dot):
        for node in nodes:
            kind = node[0]
            if kind == "text":
                self.out.append(node[1])
            elif kind == "print":
                self.out.append(self.show(self.eval(node[1], dot)))
            elif kind == "decl":
                self.scopes[-1][node[1]] = self.eval(node[2], dot)
            elif kind == "assign":
                value = self.eval(node[2], dot)
                for scope in reversed(self.scopes):
                    if node[1] in scope:
                        scope[node[1]] = value
                        break
                else:
                    raise GoTemplateError(f"undefined variable {node[1]}")
            elif kind == "if":
                for cond, body in node[1]:
                    if truth(self.eval(cond, dot)):
                        self.nested(body, dot, {})
                        break
                else:
                    self.nested(node[2], dot, {})
            elif kind == "range":
                _, names, pipe, body, other = node
                items = self.eval(pipe, dot)
                if not isinstance(items, list):
                    raise GoTemplateError("range over a non-list")
                for i, item in enumerate(items):
                    self.nested(body, item, {names[0]: i, names[1]: item} if names else {})
                if not items:
                    self.nested(other, dot, {})

    def nested(self, nodes, dot, variables):
        self.scopes.append(variables)
        try:
            self.run(nodes, dot)
        finally:
            self.scopes.pop()


def render(src: str, data: dict) -> str:
    run = _Run(data)
    run.run(parse(src), data)
    return "".join(run.out)


def ollama_prompt(template: str, messages: list[dict], system: str = "") -> str:
    """The prompt Ollama's /api/chat builds: the Modelfile SYSTEM is prepended when the
    conversation does not start with a system message; consecutive messages of one role are
    joined with a blank line; .System holds every system message."""
    if ".Messages" not in template:
        raise GoTemplateError("only templates that use .Messages are supported")
    msgs = [dict(m) for m in messages]
    if system and msgs and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    systems, collated = [], []
    for m in msgs:
        if m["role"] == "system":
            systems.append(m["content"])
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    data = {
        "System": "\n\n".join(systems),
        "Messages": collated,
        "Tools": None,
        "Response": "",
        "Think": False,
        "IsThinkSet": False,
    }
    return render(template, data)


# ---- Ollama's Modelfile parser (parser/parser.go, ParseFile), ported rune for rune -----------


def _go_printable(ch: str) -> bool:
    import unicodedata

    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _modelfile_unquote(s: str):
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def _next_state(state: str, r: str):
    space, newline = r in " \t", r in "\r\n"
    if state == "nil":
        return ("comment", "") if r == "#" else ("nil", "") if space or newline else ("name", r)
    if state == "name":
        if r.isascii() and r.isalpha():
            return "name", r
        if space:
            return "value", ""
        raise GoTemplateError("command must be one of ...")
    if state == "value":
        return ("nil", r) if space or newline else ("value", r)
    if state in ("parameter", "message"):
        ok = r.isascii() and (r.isalpha() or (state == "parameter" and (r.isdigit() or r == "_")))
        if ok:
            return state, r
        if space:
            return "value", ""
        raise GoTemplateError("unexpected EOF")
    return ("nil", "") if newline else ("comment", "")  # comment


COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser"}
COMMANDS |= {"parameter", "message", "requires"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """[(command, argument)] as Ollama reads them ("model" for FROM, the name for PARAMETER)."""
    commands, buf, state, name, role = [], [], "nil", "", ""
    for r in text:
        nxt, r = _next_state(state, r)
        if nxt != state:
            word = "".join(buf)
            if state == "name":
                if word.lower() not in COMMANDS:
                    raise GoTemplateError(f"invalid command {word!r}")
                word = word.lower()
                name = "model" if word == "from" else word
                nxt = {"parameter": "parameter", "message": "message"}.get(word, nxt)
            elif state == "parameter":
                name = word
            elif state == "message":
                role = word
            elif state == "value":
                value, ok = _modelfile_unquote(word.strip(" \t\r\n"))
                if not ok or r in (" ", "\t"):
                    buf.append(r)
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buf, state = [], nxt
        if r and _go_printable(r):
            buf.append(r)
    if state == "value":
        value, ok = _modelfile_unquote("".join(buf).strip(" \t\r\n"))
        if not ok:
            raise GoTemplateError("unexpected EOF in a value")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in ("nil", "comment"):
        raise GoTemplateError("unexpected EOF")
    if not any(c == "model" for c, _ in commands):
        raise GoTemplateError("no FROM line")
    return commands
