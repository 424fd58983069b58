"""The read-only tables of the panels: one way to make them and to fill their cells.

A row table lists things (nodes, shards, scenario steps): no editing, no row numbers,
figures as wide as they need and the rest to the last column, rows one line of text high,
`visible_rows` rows tall at least. `set_text` changes a cell only when its text changed, so
a 2 Hz redraw does not repaint what stayed the same.
"""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


def row_table(columns: tuple[str, ...], *, selectable: bool = True,
              visible_rows: int = 0) -> QTableWidget:
    """A read-only table with these column titles; one row selectable at a time, or none."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    if selectable:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    else:
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    row_height = table.fontMetrics().height() + 6
    table.verticalHeader().setDefaultSectionSize(row_height)
    if visible_rows:
        table.setMinimumHeight(visible_rows * row_height + 8)
    return table


def set_text(table: QTableWidget, row: int, column: int, text: str) -> QTableWidgetItem:
    """Put `text` in a cell (made on first use); returns the cell's item for styling."""
    item = table.item(row, column)
    if item is None:
        item = QTableWidgetItem()
        table.setItem(row, column, item)
    if item.text() != text:
        item.setText(text)
    return item
