// args: source, info, fields, header, text_fields, filename.
const rows = source.selected.indices.slice().sort((a, b) =>
    Number(source.data['index'][a]) - Number(source.data['index'][b]));
if (rows.length === 0) { info.text = 'Nothing selected to download.'; return; }
const quote = (v) => {
  const s = (v === null || v === undefined) ? '' : String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
};
// Text a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection);
// numeric columns are left alone, so -1.5 stays a number.
const defuse = (v) => {
  const s = (v === null || v === undefined) ? '' : String(v);
  return /^[=+\-@\t\r]/.test(s) ? "'" + s : s;
};
const lines = [header.map(quote).join(',')];
for (const r of rows) {
  lines.push(fields.map((f) => {
    const v = source.data[f][r];
    return quote(text_fields.includes(f) ? defuse(v) : v);
  }).join(','));
}
const blob = new Blob([lines.join('\n') + '\n'], {type: 'text/csv'});
const url = URL.createObjectURL(blob);
const link = document.createElement('a');
link.href = url;
link.download = filename;
document.body.appendChild(link);
link.click();
document.body.removeChild(link);
setTimeout(() => URL.revokeObjectURL(url), 1000);
info.text = 'Downloaded ' + rows.length.toLocaleString('en') + ' rows as ' + filename + '.';
