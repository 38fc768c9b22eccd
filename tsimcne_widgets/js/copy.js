// args: source, info.  Needs lib_selected.js.
const picked = selectedIndices();
if (picked.length === 0) { info.text = 'Nothing selected to copy.'; return; }
const text = picked.join(',');
const done = () => { info.text = 'Copied ' + picked.length.toLocaleString('en') +
                                 ' indices to the clipboard.'; };
const fallback = () => {
  // file:// pages may lack the async clipboard API; a hidden textarea still works.
  const area = document.createElement('textarea');
  area.value = text;
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
  document.body.removeChild(area);
  if (ok) { done(); } else { window.prompt('Copy the selected indices:', text); }
};
if (navigator.clipboard && window.isSecureContext) {
  navigator.clipboard.writeText(text).then(done, fallback);
} else {
  fallback();
}
