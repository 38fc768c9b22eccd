// Every map update replaces the raster and, while following, the view: two document
// changes, sent as two messages.  Moving the view in the browser in the same tick as
// the raster arrives keeps any frame from showing the new view with the old raster
// (a blank or shifted map) when the browser is slow to get the second message.
// args: source (the raster's ColumnDataSource), x_range, y_range
const data = source.data;
if (data.follow != null && data.follow[0]) {
  x_range.setv({start: data.x[0], end: data.x[0] + data.dw[0]});
  y_range.setv({start: data.y[0], end: data.y[0] + data.dh[0]});
}
