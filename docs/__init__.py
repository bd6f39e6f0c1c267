"""Tools that write pages of docs/ from the code; nothing in the product imports them."""
