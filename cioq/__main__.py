from cioq.cli import main

main()
