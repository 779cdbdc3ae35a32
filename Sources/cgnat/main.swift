print("cgnat")
