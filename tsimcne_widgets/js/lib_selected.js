// The original row numbers of the selected points (the page may show a sample), sorted.
function selectedIndices() {
  const rows = source.selected.indices;
  const original = source.data['index'];
  return Array.from(rows, (r) => Number(original[r])).sort((a, b) => a - b);
}
