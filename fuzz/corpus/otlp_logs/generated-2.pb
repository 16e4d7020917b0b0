

Š¼Ø­
knm/nfdhe/