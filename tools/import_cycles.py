"""An import-linter contract type: no import cycle among the modules of some packages.

A layers contract already refuses every import that runs upward between the modules it lists, and
so every cycle among them; this one also covers the modules a layers contract cannot list (a
package's ``__init__`` next to its own submodules, e.g. ``safetyheads`` and ``safetyheads.organisms``).
Each module counts on its own (no squashing into packages), and every import statement counts,
those inside functions too (grimp reads them all). Registered in pyproject.toml
(``[tool.importlinter] contract_types``) and run by ``nox -s lint``.
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def strongly_connected(graph: ImportGraph, modules: set[str]) -> list[list[str]]:
    """The import cycles among ``modules``: each strongly connected component of more than one
    module, sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


class NoCyclesContract(Contract):
    """``packages``: the packages whose modules (the packages themselves included) must import one
    another without a cycle."""

    type_name = "no_cycles"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        modules = {m for p in self.packages for m in {p, *graph.find_descendants(p)}}
        cycles = []
        for component in strongly_connected(graph, modules):
            # one concrete loop through the component, with the lines of each import
            first, members = component[0], set(component)
            second = sorted(graph.find_modules_directly_imported_by(first) & members)[0]
            chain = list(graph.find_shortest_chain(importer=second, imported=first) or (second, first))
            loop = [first, *chain]
            cycles.append({
                "modules": component,
                "loop": [(a, b, sorted({d["line_number"] for d in graph.get_import_details(importer=a, imported=b)}))
                         for a, b in zip(loop, loop[1:])],
            })
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Import cycle among {', '.join(cycle['modules'])}:", bold=False)
            output.new_line()
            for importer, imported, lines in cycle["loop"]:
                output.indent_cursor()
                output.print_error(f"{importer} -> {imported} (l.{', '.join(map(str, lines))})", bold=False)
            output.new_line()
