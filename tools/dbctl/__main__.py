from dbctl.cli.main import main

main()
