from anyrestore.cli.app import main

main()
