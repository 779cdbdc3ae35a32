enum CGNatPlaceholder {}
