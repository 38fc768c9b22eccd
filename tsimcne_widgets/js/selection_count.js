// args: source (the scatter's ColumnDataSource), info (a Div)
const n = source.selected.indices.length;
info.text = n === 0 ? 'Nothing selected: drag with the lasso or box tool.'
                    : n.toLocaleString('en') + ' selected';
