"""Every function of the package fits on a screen: at most
:data:`MAX_CODE_LINES` lines of code (blank lines, comments, docstrings and
``argparse`` argument declarations not counted; a nested function counts
towards the one around it)."""

import ast
import io
import tokenize
from pathlib import Path

import keras_sequencer

MAX_CODE_LINES = 80
PACKAGE_DIR = Path(keras_sequencer.__file__).parent

# Functions over the limit that are still to be split, as "module.py:function".
ALLOWED = frozenset()

# Calls that declare a command's arguments: long by nature, one fact a line.
DECLARATIONS = {"add_argument", "add_argument_group", "add_mutually_exclusive_group", "add_parser", "set_defaults"}


def code_line_numbers(source):
    """Line numbers holding code: a token other than a comment or a line break."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def excluded_line_numbers(function):
    """The lines of ``function``'s docstrings (its own and nested ones') and of
    its argument declarations (also by a local name: ``add = group.add_argument``)."""
    declarations = set(DECLARATIONS)
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) and node.value.attr in DECLARATIONS:
            declarations.update(target.id for target in node.targets if isinstance(target, ast.Name))
    lines = set()
    for node in ast.walk(function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            doc = node.body[0]
            lines.update(range(doc.lineno, doc.end_lineno + 1))
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", getattr(node.value.func, "id", None)) in declarations
        ):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def function_sizes(path):
    """``{"module.py:qualified.name": code lines}`` of every function in ``path``."""
    source = path.read_text()
    code = code_line_numbers(source)
    module = path.relative_to(PACKAGE_DIR).as_posix()
    sizes = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = set(range(child.lineno, child.end_lineno + 1))
                sizes[f"{module}:{prefix}{child.name}"] = len((body & code) - excluded_line_numbers(child))
                name = f"{prefix}{child.name}."
            elif isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}."
            visit(child, name)

    visit(ast.parse(source), "")
    return sizes


def test_line_counting_skips_docstrings_comments_and_declarations():
    source = '''
def f(parser):
    """Doc.

    More doc.
    """
    # a comment

    x = 1
    parser.add_argument(
        "--flag",
    )
    add = parser.add_argument
    add("--other")
    return (x +
            1)
'''
    tree = ast.parse(source)
    function = tree.body[0]
    lines = (set(range(function.lineno, function.end_lineno + 1)) & code_line_numbers(source)) - excluded_line_numbers(
        function
    )
    assert len(lines) == 5  # def, x = 1, add = ..., and the two lines of the return


def test_no_function_is_over_the_limit():
    sizes = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        sizes.update(function_sizes(path))
    assert "models.py:Sequencer2D" in sizes  # the walk sees the package's functions
    too_long = {name: size for name, size in sizes.items() if size > MAX_CODE_LINES and name not in ALLOWED}
    assert not too_long, f"functions over {MAX_CODE_LINES} code lines (split them): {too_long}"
    stale = sorted(name for name in ALLOWED if sizes.get(name, 0) <= MAX_CODE_LINES)
    assert not stale, f"allowed long functions that are now short or gone (remove them from ALLOWED): {stale}"
